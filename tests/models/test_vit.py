"""DiffusionBlocks ViT classifier: config checks, the label table, Euler routing through the blocks,
the two training losses, save/load and per-block loading, the Auto class, the `evaluate` accuracy module."""

import evaluate
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput

from hf_diffusionblocks import DiffusionBlocksForImageClassification, DiffusionBlocksScheduler, DiffusionBlocksViTConfig
from hf_diffusionblocks.models.vit import LabelDenoisingLoss, classification_training_loss, target_embedding_table
from hf_diffusionblocks.modeling.class_target_embeddings import posterior_mean
from hf_diffusionblocks.models.vit.evaluation_vit import accuracy_metric_path, predict_labels

from conftest import randomize_


def tiny_config(**overrides) -> DiffusionBlocksViTConfig:
    settings = dict(image_size=8, patch_size=2, num_channels=1, num_labels=10, hidden_size=32, num_hidden_layers=3,
                    num_attention_heads=2, intermediate_size=64, num_blocks=3)
    settings.update(overrides)
    return DiffusionBlocksViTConfig(**settings)


def tiny_model(seed: int = 0, **overrides) -> DiffusionBlocksForImageClassification:
    torch.manual_seed(seed)
    return randomize_(DiffusionBlocksForImageClassification(tiny_config(**overrides)), seed).eval()


def images(batch: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_size": 9}, "divisible by patch_size"),
        ({"classifier_type": "cls"}, "classifier_type must be one of"),
        ({"classifier_type": "standard"}, "needs num_blocks=1"),
        ({"label_embedding_dim": 4}, "label_embedding_dim must be an integer >= num_labels=10"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "divisible by num_attention_heads"),
        ({"num_hidden_layers": 4}, "not divisible by num_blocks"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_label_table_has_per_coordinate_rms_sigma_data_and_equidistant_rows():
    table = target_embedding_table(10, 16, sigma_data=0.5)
    assert table.shape == (10, 16)
    assert torch.allclose(table.pow(2).mean(dim=1).sqrt(), torch.full((10,), 0.5))
    distances = torch.cdist(table, table)
    off_diagonal = distances[~torch.eye(10, dtype=torch.bool)]
    assert torch.allclose(off_diagonal, torch.full_like(off_diagonal, 0.5 * (2 * 16) ** 0.5))
    model = DiffusionBlocksForImageClassification(tiny_config(label_embedding_dim=12))
    assert model.label_embeddings.shape == (10, 12) and "label_embeddings" not in model.state_dict()


def test_forward_returns_image_classifier_output_with_cross_entropy_loss():
    model = tiny_model()
    labels = torch.tensor([0, 3, 9, 1, 2])
    output = model(images(), labels=labels)
    assert isinstance(output, ImageClassifierOutput)
    assert output.logits.shape == (5, 10)
    assert torch.allclose(output.loss, F.cross_entropy(output.logits, labels))
    # deterministic by default (the trajectory starts at ε = 0)
    assert torch.equal(model(images()).logits, output.logits)
    other = model(images(), generator=torch.Generator().manual_seed(1)).logits
    assert not torch.allclose(other, output.logits)
    noise = torch.randn(5, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model(images(), initial_noise=noise).logits, other)
    with pytest.raises(ValueError, match=r"initial_noise must have shape \(5, 10\)"):
        model(images(), initial_noise=torch.zeros(5, 3))


@pytest.mark.parametrize("num_inference_steps, expected_blocks", [(3, [0, 1, 2]), (6, [0, 0, 1, 1, 2, 2])])
def test_euler_steps_route_each_step_to_its_block(monkeypatch, num_inference_steps, expected_blocks):
    model = tiny_model()
    calls, original = [], model.forward_block

    def recording(block_index, pixel_values, noisy_labels, sigma):
        calls.append((block_index, float(sigma)))
        return original(block_index, pixel_values, noisy_labels, sigma)

    monkeypatch.setattr(model, "forward_block", recording)
    model(images(), num_inference_steps=num_inference_steps)
    assert [block for block, _ in calls] == expected_blocks
    sigmas = [sigma for _, sigma in calls]
    assert sigmas[0] == pytest.approx(80.0) and sigmas == sorted(sigmas, reverse=True)


def test_sampling_is_b_euler_steps_from_sigma_max_and_the_label_is_the_last_readout():
    model = tiny_model()
    pixel_values = images()
    scheduler = DiffusionBlocksScheduler(**model.config.scheduler_kwargs())
    scheduler.set_timesteps(3)
    z = torch.randn(5, 10, generator=torch.Generator().manual_seed(7)) * 80.0
    for step, sigma in enumerate(scheduler.sigmas[:-1].tolist()):
        output = model.forward_block(step, pixel_values, z, sigma)
        expected_logits = output.logits
        sigma_next = float(scheduler.sigmas[step + 1])
        z = z + (sigma_next - sigma) * (z - output.denoised) / sigma   # Euler on dz/dσ = (z − D)/σ
    logits = model(pixel_values, generator=torch.Generator().manual_seed(7)).logits
    assert torch.allclose(logits, expected_logits, atol=1e-5)


def test_denoised_estimate_is_the_posterior_mean_of_the_readout():
    model = tiny_model()
    output = model.forward_block(1, images(), torch.randn(5, 10), 0.3)
    assert torch.allclose(output.denoised, output.logits.softmax(-1) @ model.label_embeddings, atol=1e-6)


def test_block_losses_match_their_formulas():
    model = tiny_model()
    pixel_values, labels = images(), torch.tensor([0, 3, 9, 1, 2])
    partition, preconditioning = model.config.noise_partition, model.config.preconditioning
    generator = torch.Generator().manual_seed(3)
    sigma = partition.sample_training_sigmas(2, 5, generator)
    noise = torch.randn(5, 10, generator=generator)
    target = model.label_embeddings[labels]
    output = model.forward_block(2, pixel_values, target + sigma[:, None] * noise, sigma)
    cross_entropy = LabelDenoisingLoss(partition, preconditioning)(model, 2, pixel_values, labels, torch.Generator().manual_seed(3))
    assert torch.allclose(cross_entropy, F.cross_entropy(output.logits, labels), atol=1e-6)
    l2 = LabelDenoisingLoss(partition, preconditioning, "weighted_l2")(model, 2, pixel_values, labels, torch.Generator().manual_seed(3))
    weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    assert torch.allclose(l2, (weight * (output.denoised - target).pow(2).mean(1)).mean(), rtol=1e-5)
    # σ stays inside block 2's overlap-extended interval
    low, high = partition.training_interval(2)
    assert torch.all((sigma >= low) & (sigma <= high))
    with pytest.raises(ValueError, match="objective must be one of"):
        LabelDenoisingLoss(partition, preconditioning, "l1")


def test_standard_classifier_is_one_pass_trained_with_cross_entropy(monkeypatch):
    model = tiny_model(num_blocks=1, num_hidden_layers=2, classifier_type="standard")
    calls = []
    monkeypatch.setattr(model, "forward_block", lambda *args, **kwargs: calls.append(args))
    labels = torch.tensor([0, 3, 9, 1, 2])
    output = model(images(), labels=labels)
    assert calls == []  # no Euler steps
    assert torch.equal(output.logits, model.standard_logits(images()))
    loss = classification_training_loss(model, 0, images(), labels)
    assert torch.allclose(loss, F.cross_entropy(output.logits, labels))


def test_a_trained_standard_classifier_gets_a_gradient_at_its_head():
    # a zero [CLS] token would stay zero through the zero-initialised layers and never train the head
    torch.manual_seed(0)
    model = DiffusionBlocksForImageClassification(tiny_config(num_blocks=1, num_hidden_layers=2, classifier_type="standard"))
    classification_training_loss(model, 0, images(), torch.tensor([0, 3, 9, 1, 2])).backward()
    assert model.get_block(0).head.linear.weight.grad.abs().sum() > 0


def test_save_and_reload_is_bit_exact(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    reloaded = DiffusionBlocksForImageClassification.from_pretrained(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    assert torch.equal(model(images()).logits, reloaded(images()).logits)


def test_one_block_loads_alone_and_matches_the_full_model(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    one = DiffusionBlocksForImageClassification.from_pretrained(tmp_path, block_index=1)
    assert one.loaded_block_indices == [1]
    assert one.num_parameters() < model.num_parameters() / 2
    z = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(one.forward_block(1, images(), z, 0.3).logits, model.forward_block(1, images(), z, 0.3).logits)
    with pytest.raises(ValueError, match="block 0 is not loaded"):
        one.forward_block(0, images(), z, 0.3)
    with pytest.raises(ValueError, match=r"block_index must be an int in \[0, 2\]"):
        DiffusionBlocksForImageClassification.from_pretrained(tmp_path, block_index=3)


def test_auto_classes_resolve_the_family(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, DiffusionBlocksViTConfig)
    assert type(AutoModelForImageClassification.from_config(config)) is DiffusionBlocksForImageClassification


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 1, 8, 8\)"):
        model(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="noisy_labels must have shape"):
        model.forward_block(0, images(2), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match=r"block_index must be an int in \[0, 2\]"):
        model.forward_block(3, images(2), torch.zeros(2, 10), 1.0)
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1"):
        model(images(2), num_inference_steps=0)


def test_accuracy_module_loads_by_path_and_counts_matches(tmp_path):
    metric = evaluate.load(accuracy_metric_path(), cache_dir=str(tmp_path))
    assert metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 0, 0]) == {"accuracy": 0.5}
    assert metric.compute(predictions=[0, 1], references=[0, 0], normalize=False) == {"accuracy": 1.0}
    model = tiny_model()
    predictions = predict_labels(model, images(7), batch_size=3)
    assert predictions.shape == (7,) and predictions.dtype == torch.long
    assert torch.equal(predictions, predict_labels(model, images(7), batch_size=7))  # batching does not matter


def test_default_start_at_zero_returns_the_posterior_mode_and_random_starts_sample_it(monkeypatch):
    # Stand-in blocks with the exact posterior of z = E_y + σε under a prior p(y | x) = (0.6, 0.4, 0, ...):
    # from z = 0 the Euler steps end at the mode for every image; from σ_max·ε they sample labels.
    from types import SimpleNamespace

    model = tiny_model()
    table = model.label_embeddings
    log_prior = torch.full((10,), -30.0)
    log_prior[:2] = torch.tensor([0.6, 0.4]).log()

    def exact_posterior(block_index, pixel_values, noisy_labels, sigma):
        distances = torch.cdist(noisy_labels, table) ** 2
        logits = log_prior - distances / (2 * float(sigma) ** 2)
        return SimpleNamespace(logits=logits, denoised=posterior_mean(logits, table))

    monkeypatch.setattr(model, "forward_block", exact_posterior)
    pixel_values = images(2000).expand(2000, 1, 8, 8)
    assert torch.equal(model(pixel_values).logits.argmax(-1), torch.zeros(2000, dtype=torch.long))
    sampled = model(pixel_values, generator=torch.Generator().manual_seed(0)).logits.argmax(-1)
    assert set(sampled.tolist()) == {0, 1}
    assert float((sampled == 1).float().mean()) == pytest.approx(0.4, abs=0.05)
    # predict_labels follows the same rule: no seed → the mode, a seed → samples
    assert torch.equal(predict_labels(model, pixel_values[:50]), torch.zeros(50, dtype=torch.long))
    assert (predict_labels(model, pixel_values[:200], seed=1) == 1).any()


def test_classifier_steps_evaluate_each_block_at_its_midpoint_and_spacing_is_inference_only(tmp_path):
    model = tiny_model()
    scheduler = model.build_scheduler()
    assert scheduler.config.timestep_spacing == "midpoints"
    scheduler.set_timesteps(3)
    assert scheduler.block_indices.tolist() == [0, 1, 2]
    model.save_pretrained(tmp_path)
    # blocks trained under one spacing load under another: it only steers inference
    config = DiffusionBlocksViTConfig.from_pretrained(tmp_path, timestep_spacing="edges")
    assert config.differing_fields(model.config) == []
    edges = DiffusionBlocksForImageClassification.from_pretrained(tmp_path, config=config).eval()
    assert edges.build_scheduler().config.timestep_spacing == "edges"
    assert not torch.equal(edges(images()).logits, model(images()).logits)
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        tiny_config(timestep_spacing="middle")
