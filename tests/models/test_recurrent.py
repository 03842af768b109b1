"""DiffusionBlocks recurrent-depth LM: config checks, one-pass training vs truncated BPTT, the K-iteration
inference (depends on K, converges as K grows on a trained model), save/load, routing, generate()."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.modeling_outputs import CausalLMOutput

from hf_diffusionblocks import DiffusionBlocksRecurrentConfig, DiffusionBlocksRecurrentForCausalLM
from hf_diffusionblocks.models.recurrent import RecurrentDenoisingLoss, TruncatedBPTTLoss, sample_num_iterations
from hf_diffusionblocks.models.recurrent.evaluation_recurrent import held_out_cross_entropy

from conftest import randomize_


def tiny_config(**overrides) -> DiffusionBlocksRecurrentConfig:
    settings = dict(vocab_size=12, hidden_size=32, num_hidden_layers=2, num_prelude_layers=1, num_coda_layers=1,
                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=16)
    settings.update(overrides)
    return DiffusionBlocksRecurrentConfig(**settings)


def tiny_model(seed: int = 0, **overrides) -> DiffusionBlocksRecurrentForCausalLM:
    torch.manual_seed(seed)
    return randomize_(DiffusionBlocksRecurrentForCausalLM(tiny_config(**overrides)), seed, std=0.1).eval()


def token_ids(batch: int = 3, length: int = 10, vocab: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def trained_model() -> DiffusionBlocksRecurrentForCausalLM:
    """A tiny core trained for ~2 s with the one-pass loss on i.i.d. tokens from a skewed unigram."""
    torch.manual_seed(0)
    model = DiffusionBlocksRecurrentForCausalLM(tiny_config(vocab_size=6, num_prelude_layers=0, max_position_embeddings=8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_function = RecurrentDenoisingLoss(model.config.noise_partition)
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    for _ in range(150):
        batch = torch.multinomial(probabilities, 32 * 9, replacement=True, generator=generator).view(32, 9)
        loss_function(model, 0, batch, generator).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"target_embedding_dim": 4}, "target_embedding_dim must be an integer >= vocab_size=12"),
        ({"num_iterations": 0}, "num_iterations must be an integer >= 1"),
        ({"num_coda_layers": -1}, "num_coda_layers must be an integer >= 0"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "divisible by num_attention_heads"),
        ({"num_blocks": 3}, "not divisible by num_blocks"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_default_is_one_core_shared_by_every_noise_level():
    config = tiny_config()
    assert config.num_blocks == 1 and config.noise_partition.block_interval(0) == (0.002, 80.0)
    model = DiffusionBlocksRecurrentForCausalLM(config)
    assert model.loaded_block_indices == [0] and model.token_targets.shape == (12, 12)


def test_forward_returns_causal_lm_output_and_shifted_loss():
    model = tiny_model()
    ids = token_ids()
    output = model(ids, labels=ids, num_iterations=3)
    assert isinstance(output, CausalLMOutput) and output.logits.shape == (3, 10, 12)
    expected = F.cross_entropy(output.logits[:, :-1].reshape(-1, 12), ids[:, 1:].reshape(-1))
    assert torch.allclose(output.loss, expected)
    assert torch.equal(model(ids, num_iterations=3).logits, output.logits)  # deterministic by default


def test_prediction_at_a_position_ignores_later_tokens():
    model = tiny_model()
    ids = token_ids(1, 10)
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % 12
    original, modified = model(ids, num_iterations=4).logits, model(changed, num_iterations=4).logits
    assert torch.allclose(original[:, :6], modified[:, :6], atol=1e-6)
    assert not torch.allclose(original[:, 6:], modified[:, 6:])


def test_iterations_follow_the_sigma_grid_and_k_below_one_is_refused(monkeypatch):
    model = tiny_model()
    sigmas = []
    original = model._iteration

    def recording(block, embedded, state, sigma, return_dict=True):
        sigmas.append(float(sigma[0]))
        return original(block, embedded, state, sigma, return_dict)

    monkeypatch.setattr(model, "_iteration", recording)
    model(token_ids(), num_iterations=5)
    expected = model.build_scheduler().noise_partition.inference_sigmas(5)[:-1].tolist()
    assert sigmas == pytest.approx(expected, rel=1e-5) and sigmas[0] == pytest.approx(80.0)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match=r"num_iterations \(K\) must be an integer >= 1"):
            model(token_ids(), num_iterations=bad)


def test_output_depends_on_k_and_converges_as_k_grows(trained_model):
    ids = torch.tensor([[0, 1, 0, 2, 0, 3, 1, 0]])

    @torch.no_grad()
    def probabilities(num_iterations: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(5)
        return trained_model(ids, num_iterations=num_iterations, generator=generator).logits.softmax(-1)

    ks = [1, 2, 4, 8, 16, 32, 64, 128]
    outputs = {k: probabilities(k) for k in ks}
    gaps = [float((outputs[a] - outputs[b]).abs().max()) for a, b in zip(ks, ks[1:])]
    assert gaps[0] > 0.05                                   # one step and two steps give different readouts
    assert gaps[-1] < 0.25 * max(gaps[:3])                  # refining the grid changes the result less and less
    assert gaps[-1] < 0.05
    # K = 1 reads the core once at σ_max: the learned unigram, not a sampled token
    unigram = outputs[1][0].mean(0)
    assert float(unigram[0]) > float(unigram[5])


def test_one_pass_loss_matches_its_formula():
    model = tiny_model()
    ids = token_ids(length=11)
    generator = torch.Generator().manual_seed(3)
    sigma = model.config.noise_partition.sample_training_sigmas(0, 3, generator)
    noise = torch.randn(3, 10, 12, generator=generator)
    clean = model.token_targets[ids[:, 1:]]
    logits = model.forward_block(0, ids[:, :-1], clean + sigma[:, None, None] * noise, sigma).logits
    loss = RecurrentDenoisingLoss(model.config.noise_partition)(model, 0, ids, torch.Generator().manual_seed(3))
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 12), ids[:, 1:].reshape(-1)), atol=1e-6)


def test_truncated_bptt_differentiates_only_the_last_iterations(monkeypatch):
    model = tiny_model()
    grad_modes = []
    model.get_block(0).core[0].register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    model.train()
    logits = model.iterate(token_ids(), num_iterations=5, num_gradient_iterations=2)
    assert grad_modes == [False, False, False, True, True] and logits.requires_grad
    monkeypatch.setattr("hf_diffusionblocks.models.recurrent.losses_recurrent.sample_num_iterations", lambda *a, **k: 6)
    grad_modes.clear()
    TruncatedBPTTLoss(mean_recurrence=5, bptt_steps=3)(model, 0, token_ids(length=11)).backward()
    assert grad_modes == [False, False, False, True, True, True]
    assert model.get_block(0).token_embedding.weight.grad.abs().sum() > 0  # the prelude learns through the last steps


def test_random_depth_follows_huginn_distribution():
    generator = torch.Generator().manual_seed(0)
    depths = torch.tensor([sample_num_iterations(8, generator) for _ in range(2000)], dtype=torch.float32)
    assert depths.min() >= 1 and abs(float(depths.mean()) - 9.0) < 0.5
    with pytest.raises(ValueError, match="bptt_steps must be an integer >= 1"):
        TruncatedBPTTLoss(8, 0)
    with pytest.raises(ValueError, match="mean_recurrence must be > 0"):
        TruncatedBPTTLoss(0, 4)


def test_two_blocks_each_own_their_interval(monkeypatch):
    model = tiny_model(num_blocks=2, num_hidden_layers=2)
    used = []
    for index in (0, 1):
        model.get_block(index).core[0].register_forward_hook(lambda *_, index=index: used.append(index))
    model(token_ids(), num_iterations=4)
    assert used == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="num_blocks must be 1"):
        TruncatedBPTTLoss(4, 2)(model, 0, token_ids(length=11))


def test_save_and_reload_is_bit_exact(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    reloaded = DiffusionBlocksRecurrentForCausalLM.from_pretrained(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    assert torch.equal(model(token_ids(), num_iterations=3).logits, reloaded(token_ids(), num_iterations=3).logits)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DiffusionBlocksRecurrentConfig)
    assert type(AutoModelForCausalLM.from_config(reloaded.config)) is DiffusionBlocksRecurrentForCausalLM


def test_generate_appends_tokens_with_k_iterations():
    model = tiny_model()
    prompt = token_ids(1, 4)
    generated = model.generate(prompt, max_new_tokens=5, do_sample=False, num_iterations=3)
    assert generated.shape == (1, 9) and torch.equal(generated[:, :4], prompt)
    next_token = model(prompt, num_iterations=3, start_from_noise=False).logits[0, -1].argmax()
    assert generated[0, 4] == next_token            # greedy: the core starts at ε = 0


def test_zero_start_is_the_noise_free_trajectory_and_sampling_starts_from_noise(monkeypatch):
    model = tiny_model()
    zero_start = model(token_ids(), num_iterations=3, start_from_noise=False).logits
    noisy = model(token_ids(), num_iterations=3).logits
    assert not torch.equal(zero_start, noisy)
    seen = []
    original = model.iterate
    monkeypatch.setattr(model, "iterate", lambda *args, **kwargs: seen.append(kwargs["start_from_noise"]) or original(*args, **kwargs))
    model.generate(token_ids(1, 4), max_new_tokens=1, do_sample=False, num_iterations=2)
    model.generate(token_ids(1, 4), max_new_tokens=1, do_sample=True, num_iterations=2)
    assert seen == [False, True]
    monkeypatch.setattr(torch, "randn", lambda shape, **kwargs: torch.zeros(shape))
    assert torch.equal(original(token_ids(), 3), zero_start)


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="longer than max_position_embeddings=16"):
        model(token_ids(1, 17))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 11\]"):
        model(torch.tensor([[0, 12]]))
    with pytest.raises(ValueError, match="noisy_targets must have shape"):
        model.forward_block(0, token_ids(), torch.zeros(3, 10, 5), 1.0)
    with pytest.raises(ValueError, match="attention_mask must be all ones"):
        model(token_ids(), attention_mask=torch.zeros(3, 10))


def test_held_out_cross_entropy_averages_disjoint_windows():
    model = tiny_model()
    text = token_ids(1, 45)[0]
    value = held_out_cross_entropy(model, text, sequence_length=10, num_windows=4, num_iterations=2, batch_size=4)
    windows = text[:44].view(4, 11)
    logits = model.iterate(windows[:, :-1], 2, torch.Generator().manual_seed(0))
    assert value == pytest.approx(float(F.cross_entropy(logits.detach().reshape(-1, 12), windows[:, 1:].reshape(-1))), rel=1e-5)
