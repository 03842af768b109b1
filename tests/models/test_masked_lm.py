"""DiffusionBlocksForMaskedLM: SUBS outputs, routing, per-block loading, bad inputs, the NELBO.

The masked partition's values (block_times, equal α decrements, routing) are tested in
tests/schedulers/test_scheduling_masked_diffusion_blocks.py; here the model is checked against it.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForMaskedLM

from conftest import randomize_
from hf_diffusionblocks import DiffusionBlocksForMaskedLM, DiffusionBlocksMaskedLMConfig, MaskedDiffusionLoss
from hf_diffusionblocks.evaluation import estimate_sequence_nelbo, time_strata

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads only add synchronisation (several times slower on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


VOCAB_SIZE = 12  # 11 tokens + [MASK] (id 11)


def tiny_config(**overrides):
    fields = dict(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=16, num_blocks=3)
    return DiffusionBlocksMaskedLMConfig(**{**fields, **overrides})


@pytest.fixture
def model():
    return randomize_(DiffusionBlocksForMaskedLM(tiny_config()), std=0.1).eval()


def clean_ids(batch=4, seq_len=16, seed=0):
    return torch.randint(0, VOCAB_SIZE - 1, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def test_config_defaults_and_validation():
    config = tiny_config()
    assert config.mask_token_id == VOCAB_SIZE - 1
    assert config.build_scheduler().config.num_blocks == 3 and config.build_scheduler().config.schedule == "linear"
    with pytest.raises(ValueError, match=r"mask_token_id must be an integer in \[0, 11\]"):
        tiny_config(mask_token_id=12)
    with pytest.raises(ValueError, match=r"masking_schedule must be one of \['linear', 'cosine'\]"):
        tiny_config(masking_schedule="geometric")
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        tiny_config(num_attention_heads=5)
    with pytest.raises(ValueError, match="not divisible"):
        tiny_config(num_hidden_layers=7)
    with pytest.raises(ValueError, match="must be even"):
        tiny_config(hidden_size=30, num_attention_heads=2)  # head_dim 15: rotary needs pairs
    with pytest.raises(ValueError, match=r"rope_theta must be > 0 \(a finite number\)"):
        tiny_config(rope_theta=0)


def test_auto_classes_resolve_the_family():
    fields = {k: v for k, v in tiny_config().to_dict().items() if k != "model_type"}
    config = AutoConfig.for_model("diffusion_blocks_masked_lm", **fields)
    assert isinstance(config, DiffusionBlocksMaskedLMConfig)
    assert type(AutoModelForMaskedLM.from_config(config)) is DiffusionBlocksForMaskedLM


def test_outputs_follow_the_substitution_parameterization(model):
    ids = clean_ids()
    noisy = ids.clone()
    noisy[:, ::2] = model.config.mask_token_id
    logits = model.forward_block(1, noisy, 0.5).logits
    assert logits.shape == (4, 16, VOCAB_SIZE)
    assert torch.isneginf(logits[..., model.config.mask_token_id]).all()  # x₀ is never the mask
    probabilities = logits.softmax(-1)
    # carry-over: an unmasked position predicts its own token with probability 1
    assert torch.equal(probabilities[:, 1::2].argmax(-1), ids[:, 1::2])
    assert torch.allclose(probabilities[:, 1::2].max(-1).values, torch.ones(4, 8))
    # masked positions get a proper distribution over the 11 real tokens
    assert torch.isfinite(logits[:, ::2, :-1]).all() and torch.allclose(probabilities[:, ::2].sum(-1), torch.ones(4, 8))


def test_forward_routes_each_sequence_to_the_block_that_owns_its_t(model):
    noisy = clean_ids()
    noisy[:, :5] = model.config.mask_token_id
    t = torch.tensor([0.9, 0.5, 0.1, 0.6])  # blocks 0, 1, 2, 1
    routed = model(noisy, t).logits
    for row, block_index in enumerate([0, 1, 2, 1]):
        expected = model.forward_block(block_index, noisy[row : row + 1], t[row : row + 1]).logits
        assert torch.allclose(routed[row : row + 1], expected, atol=1e-6)
    # blocks differ: routing to another block gives other logits
    other = model.forward_block(2, noisy[:1], t[:1]).logits
    assert not torch.allclose(routed[:1, :5], other[:, :5])


def test_blocks_share_nothing_and_one_block_loads_a_third_of_the_parameters(model, tmp_path):
    seen = set()
    for block_index in range(3):
        for parameter in model.block_parameters(block_index):
            assert id(parameter) not in seen
            seen.add(id(parameter))
    assert len(seen) == len(list(model.parameters()))
    model.save_pretrained(tmp_path)
    one = DiffusionBlocksForMaskedLM.from_pretrained(tmp_path, block_index=1)
    total = sum(p.numel() for p in model.parameters())
    assert one.loaded_block_indices == [1]
    assert sum(p.numel() for p in one.parameters()) == total // 3 == model.num_block_parameters(1)
    noisy = clean_ids()
    noisy[:, 3:9] = model.config.mask_token_id
    assert torch.equal(one.forward_block(1, noisy, 0.4).logits, model.forward_block(1, noisy, 0.4).logits)
    full = DiffusionBlocksForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(full(noisy, torch.tensor([0.9, 0.5, 0.2, 0.0])).logits, model(noisy, torch.tensor([0.9, 0.5, 0.2, 0.0])).logits)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.forward_block(0, torch.zeros(2, 17, dtype=torch.long), 0.5), "longer than max_position_embeddings=16"),
        (lambda m: m.forward_block(3, torch.zeros(2, 8, dtype=torch.long), 0.5), r"block_index must be an int in \[0, 2\]"),
        (lambda m: m.forward_block(-1, torch.zeros(2, 8, dtype=torch.long), 0.5), r"block_index must be an int in \[0, 2\]"),
        (lambda m: m.forward_block(0, torch.full((2, 8), 12), 0.5), r"input_ids must lie in \[0, 11\]"),
        (lambda m: m.forward_block(0, torch.zeros(2, 8, dtype=torch.long), 1.5), r"t must lie in \[0, 1\]"),
        (lambda m: m.forward_block(0, torch.zeros(2, 8, dtype=torch.long), torch.ones(3) / 2), r"t must be a scalar or have shape \(2,\)"),
        (lambda m: m.forward_block(0, torch.zeros(8, dtype=torch.long), 0.5), r"shape \(batch, seq_len\)"),
        (lambda m: m(torch.zeros(1, 20, dtype=torch.long), 0.5), "longer than max_position_embeddings"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_block_loss_trains_only_its_block(model):
    loss = MaskedDiffusionLoss(model.build_scheduler(), model.config.mask_token_id)
    value = loss(model, 2, clean_ids(8), torch.Generator().manual_seed(0))
    value.backward()
    assert value.item() > 0 and math.isfinite(value.item())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.get_block(2).parameters() if p.ndim > 1)
    assert all(p.grad is None for b in (0, 1) for p in model.block_parameters(b))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_nelbo_equals_the_sum_of_the_blocks_interval_losses(schedule):
    """Midpoint quadrature on a t grid, the same masks: the assembled model's NELBO integrand vs the blocks' losses."""
    model = randomize_(DiffusionBlocksForMaskedLM(tiny_config(masking_schedule=schedule)), std=0.1).eval()
    scheduler = model.build_scheduler()
    loss = MaskedDiffusionLoss(scheduler, model.config.mask_token_id)
    ids, per_block = clean_ids(), 4
    nelbo_direct, nelbo_blocks = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        for block_index, low, high in time_strata(scheduler, 3 * per_block):
            t = torch.full((4,), (low + high) / 2, dtype=torch.float64)
            # (a) the NELBO integrand written out: Δt · w(t) · Σ_masked −log p(x₀ | x_t), with the routed model
            noisy, masked = scheduler.add_noise(ids, t, model.config.mask_token_id, torch.Generator().manual_seed(7))
            log_probabilities = F.log_softmax(model(noisy, t.float()).logits.double(), dim=-1)
            token_nll = -log_probabilities.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            nelbo_direct += (high - low) * scheduler.nelbo_weight(t) * (token_nll * masked).sum(1)
            # (b) block b's training loss at the same t and masks, one of its `per_block` strata
            nelbo_blocks += loss.sequence_losses(model, block_index, ids, t, torch.Generator().manual_seed(7)).double() / per_block
    assert torch.allclose(nelbo_direct, nelbo_blocks, rtol=1e-5)
    assert (nelbo_blocks > 0).all()


def test_nelbo_estimator_is_the_sum_of_block_losses_with_the_same_draws(model):
    """`estimate_sequence_nelbo` with one stratum per block = Σ_b block b's loss, same generator stream."""
    ids = clean_ids()
    estimate = estimate_sequence_nelbo(model, ids, num_time_strata=3, num_replicates=1, generator=torch.Generator().manual_seed(3))
    scheduler = model.build_scheduler()
    loss, generator, expected = MaskedDiffusionLoss(scheduler, model.config.mask_token_id), torch.Generator().manual_seed(3), 0
    with torch.no_grad():
        for block_index in range(3):
            low, high = scheduler.block_interval(block_index)
            t = (low + torch.rand(4, generator=generator, dtype=torch.float64) * (high - low)).clamp_min(1e-5)
            expected = expected + loss.sequence_losses(model, block_index, ids, t, generator).double()
    assert torch.allclose(estimate[:, 0], expected)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_bits_per_character_of_a_uniform_model_is_log2_of_the_vocabulary(schedule):
    """A fresh model (zero-initialised readout) predicts uniformly over the V − 1 real tokens: NELBO = L·ln(V − 1)."""
    from hf_diffusionblocks import CharacterTokenizer
    from hf_diffusionblocks.evaluation import estimate_nelbo

    tokenizer = CharacterTokenizer(characters="abcdefghij")  # 10 characters + [UNK] + [MASK]
    model = DiffusionBlocksForMaskedLM(tiny_config(masking_schedule=schedule)).eval()
    text = "abcdefghij" * 100 + "abc"  # 62 windows of 16 and a tail of 7
    estimate = estimate_nelbo(model, tokenizer, text, sequence_length=16, num_time_strata=6, num_replicates=3, seed=0)
    assert estimate.num_characters == 1003 and estimate.num_sequences == 63
    assert 0 < estimate.bits_per_character_standard_error < 0.1
    assert abs(estimate.bits_per_character - math.log2(VOCAB_SIZE - 1)) < 4 * estimate.bits_per_character_standard_error
    again = estimate_nelbo(model, tokenizer, text, sequence_length=16, num_time_strata=6, num_replicates=3, seed=0)
    assert again.nelbo_nats == estimate.nelbo_nats  # fixed seed: the estimate is deterministic
    # the split over t: six strata (two per block) that add up to the NELBO; a uniform model's stratum [a, b]
    # holds the share α(a) − α(b) of it (masked tokens per unit of α are constant, each costs ln(V − 1))
    scheduler = model.build_scheduler()
    assert [stratum.block_index for stratum in estimate.strata] == [0, 0, 1, 1, 2, 2]
    assert sum(stratum.nelbo_nats for stratum in estimate.strata) == pytest.approx(estimate.nelbo_nats, rel=1e-12)
    for stratum in estimate.strata:
        share = float(scheduler.alpha(stratum.t_low) - scheduler.alpha(stratum.t_high))
        assert stratum.standard_error_nats > 0
        assert abs(stratum.nelbo_nats - share * estimate.nelbo_nats) < 4 * stratum.standard_error_nats + 1e-9
    reported = estimate.to_dict()["strata"]
    assert sum(row["bits_per_character"] for row in reported) == pytest.approx(estimate.bits_per_character)


def test_attention_sees_positions(model):
    """Bidirectional attention without positions is permutation-equivariant: the prediction at a masked
    position would not change when the context around it is permuted. Rotary embeddings make it change."""
    ids = clean_ids(1)
    ids[0, 0] = model.config.mask_token_id
    permuted = torch.cat([ids[:, :1], ids[:, 1:].flip(1)], dim=1)
    before = model.forward_block(0, ids, 0.8).logits[0, 0]
    after = model.forward_block(0, permuted, 0.8).logits[0, 0]
    assert not torch.allclose(before[:-1], after[:-1], atol=1e-4)
