"""The causal LM's sampler (sampling_causal_lm.py): the per-token routed loop, its explicit sampling cache,
the token draws of the ancestral solver."""

import pytest
import torch
from test_causal_lm import prompt, tiny_model

from hf_diffusionblocks import DiffusionBlocksScheduler
from hf_diffusionblocks.models.causal_lm.sampling_causal_lm import (
    CausalLMSamplingCache,
    check_solver,
    sample_from_logits,
    sampling_settings,
)


def test_the_model_keeps_no_sampling_state_between_calls():
    model = tiny_model()
    before = dict(model.__dict__)
    model.generate(prompt(), max_new_tokens=3, do_sample=False)
    model(prompt(), solver="euler")
    assert model.__dict__.keys() == before.keys()
    assert all(model.__dict__[key] is value for key, value in before.items())


def count_noise_conditionings(model, monkeypatch) -> list[int]:
    calls = []
    for block_index in range(model.config.num_blocks):
        block = model.get_block(block_index)
        original = block.noise_conditioning

        def spy(c_noise, original=original, block_index=block_index):
            calls.append(block_index)
            return original(c_noise)

        monkeypatch.setattr(block, "noise_conditioning", spy)
    return calls


def test_a_passed_sampling_cache_is_reused_and_none_is_made_per_call(monkeypatch):
    model = tiny_model()
    calls = count_noise_conditionings(model, monkeypatch)
    for _ in range(2):
        model(prompt(), logits_to_keep=1)
    assert calls == [0, 1, 2, 3] * 2                                            # no cache: each call computes
    calls.clear()
    sampling_cache = CausalLMSamplingCache()
    first = model(prompt(), logits_to_keep=1, sampling_cache=sampling_cache, generator=torch.Generator().manual_seed(0))
    second = model(prompt(), logits_to_keep=1, sampling_cache=sampling_cache, generator=torch.Generator().manual_seed(0))
    model(prompt(), logits_to_keep=1, sampling_cache=sampling_cache, num_inference_steps=6)
    assert calls == [0, 1, 2, 3] + [0, 0, 1, 2, 2, 3]                          # once per grid
    assert torch.equal(first.logits, second.logits)
    assert list(sampling_cache.steps) == [(4, "cpu", torch.float32), (6, "cpu", torch.float32)]


def test_the_sampling_cache_copies_its_scheduler_and_rebuilds_it_for_other_arguments():
    sampling_cache = CausalLMSamplingCache()
    kwargs = dict(num_blocks=3, solver="euler")
    first, second = sampling_cache.scheduler_for(kwargs), sampling_cache.scheduler_for(dict(kwargs))
    assert first is not second and first.noise_partition is second.noise_partition   # one build, two step counters
    first.set_timesteps(3)
    assert second.step_index is None
    sampling_cache.steps[(3, "cpu", torch.float32)] = []
    other = sampling_cache.scheduler_for(dict(num_blocks=3, solver="ancestral"))
    assert other.config.solver == "ancestral" and sampling_cache.steps == {}        # the old steps are dropped
    assert isinstance(other, DiffusionBlocksScheduler)


def test_an_ancestral_token_draws_only_what_its_steps_use():
    """ε, then per step but the last the Gumbel uniforms of the token draw and the step's fresh noise: no
    token is drawn from the last readout (the loop stops before the step to σ = 0)."""
    model = tiny_model()
    batch, dim, vocab = 2, model.config.target_embedding_dim, model.config.vocab_size
    generator = torch.Generator().manual_seed(3)
    model(prompt(batch=batch), logits_to_keep=1, solver="ancestral", generator=generator)
    reference = torch.Generator().manual_seed(3)
    torch.randn(batch, 1, dim, generator=reference)                              # ε
    for _ in range(model.config.num_blocks - 1):
        torch.rand(batch, 1, vocab, generator=reference)                         # the token draw
        torch.randn(batch, 1, dim, generator=reference)                          # the step's fresh noise
    assert torch.equal(generator.get_state(), reference.get_state())


def test_euler_draws_only_the_initial_noise():
    model = tiny_model()
    generator = torch.Generator().manual_seed(3)
    model(prompt(), logits_to_keep=1, solver="euler", generator=generator)
    reference = torch.Generator().manual_seed(3)
    torch.randn(2, 1, model.config.target_embedding_dim, generator=reference)
    assert torch.equal(generator.get_state(), reference.get_state())


def test_sample_from_logits_follows_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0], [5.0, 0.0, 0.0]])
    draws = sample_from_logits(logits.expand(20000, 2, 3), torch.Generator().manual_seed(0))   # (20000, 2)
    for row in range(2):
        frequencies = torch.bincount(draws[:, row], minlength=3).float() / 20000
        torch.testing.assert_close(frequencies, logits[row].softmax(-1), atol=0.015, rtol=0)
    again = sample_from_logits(logits.expand(20000, 2, 3), torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_sampling_settings_default_to_the_config_and_name_the_bad_argument():
    config = tiny_model().config
    assert sampling_settings(config, None, None) == (config.default_num_inference_steps, config.solver)
    assert sampling_settings(config, 6, "euler") == (6, "euler")
    assert check_solver(None, "ancestral") == "ancestral"
    with pytest.raises(ValueError, match="solver must be one of"):
        sampling_settings(config, None, "heun")
    with pytest.raises(ValueError, match="num_inference_steps"):
        sampling_settings(config, 3, None)                                      # fewer steps than the 4 blocks
