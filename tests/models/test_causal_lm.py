"""DiffusionBlocksForCausalLM: attention masks, the two streams, the per-block loss, generation, save/load."""

import dataclasses

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from conftest import randomize_
from hf_diffusionblocks import (
    CausalLMDenoisingLoss,
    DiffusionBlocksCausalLMConfig,
    DiffusionBlocksForCausalLM,
    DiffusionBlocksScheduler,
)
from hf_diffusionblocks.models.causal_lm import (
    block_diffusion_attention_mask,
    make_target_embeddings,
    posterior_entropy,
    semantic_target_embeddings,
    target_embedding_digest,
)
from hf_diffusionblocks.models.causal_lm import modeling_causal_lm
from hf_diffusionblocks.models.causal_lm.modeling_causal_lm import CausalLMBlock
from hf_diffusionblocks.models.causal_lm.attention_masks import (
    cached_clean_attention_mask,
    fused_step_attention_mask,
    noisy_query_attention_mask,
)

VOCAB = 40


def tiny_config(**overrides) -> DiffusionBlocksCausalLMConfig:
    fields = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=24, num_blocks=4, eos_token_id=1, pad_token_id=0,
    )
    fields.update(overrides)
    return DiffusionBlocksCausalLMConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> DiffusionBlocksForCausalLM:
    # std 0.2: logits spread enough that argmax ties (and float noise deciding them) are vanishingly unlikely
    return randomize_(DiffusionBlocksForCausalLM(tiny_config(**overrides)), seed=seed, std=0.2).eval()


def prompt(batch=2, length=6, seed=0):
    return torch.randint(2, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---- attention masks ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5])
def test_block_diffusion_mask_element_wise(n):
    mask = block_diffusion_attention_mask(n)
    assert mask.shape == (2 * n, 2 * n) and mask.dtype == torch.bool
    for i in range(n):
        for j in range(n):
            assert mask[i, j] == (i == j), f"noisy {i} → noisy {j}"            # noisy sees only itself
            assert mask[i, n + j] == (j < i), f"noisy {i} → clean {j}"         # and the clean past
            assert not mask[n + i, j], f"clean {i} → noisy {j}"                # clean never sees noise
            assert mask[n + i, n + j] == (j <= i), f"clean {i} → clean {j}"   # clean is causal


def test_cached_masks_respect_padding_and_causality():
    key_padding = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    clean = cached_clean_attention_mask(key_padding, num_queries=2)             # queries = keys 3 and 4
    assert clean.shape == (2, 1, 2, 5)
    assert clean[0, 0].tolist() == [[False, False, True, True, False], [False, False, True, True, True]]
    assert clean[1, 0].tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    padded_query = cached_clean_attention_mask(key_padding, num_queries=5)[0, 0, 0]
    assert padded_query.tolist() == [True, False, False, False, False]         # a pad query sees itself only
    noisy = noisy_query_attention_mask(key_padding, torch.tensor([3, 5]))
    assert noisy.shape == (2, 1, 2, 7)
    assert noisy[0, 0].tolist() == [[False, False, True, False, False, True, False],
                                    [False, False, True, True, True, False, True]]


def test_fused_step_mask_is_the_clean_and_noisy_masks_side_by_side():
    key_padding = torch.tensor([[False, True, True, True], [True, True, True, True]])
    context_lengths = torch.tensor([4])                                         # the query after the last token
    mask = fused_step_attention_mask(key_padding, num_new_tokens=1, context_lengths=context_lengths)
    assert mask.shape == (2, 1, 2, 5)
    assert mask[0, 0].tolist() == [[False, True, True, True, False],          # clean token 3: causal, never noisy
                                   [False, True, True, True, True]]           # noisy query: clean < 4 and itself
    assert torch.equal(mask[:, :, :1, :4], cached_clean_attention_mask(key_padding, 1))
    assert torch.equal(mask[:, :, 1:], noisy_query_attention_mask(key_padding, context_lengths))
    prefill = fused_step_attention_mask(key_padding, num_new_tokens=4, context_lengths=torch.arange(4) + 1)
    assert not prefill[:, :, :4, 4:].any()                                      # no clean row sees a noisy key


def test_noisy_position_depends_only_on_earlier_clean_tokens_and_itself():
    model = tiny_model()
    input_ids = prompt(batch=1, length=6)
    noisy = torch.randn(1, 6, model.config.target_embedding_dim, generator=torch.Generator().manual_seed(1))
    base = model.forward_block(1, input_ids, noisy, 0.5).logits
    i = 3
    later = input_ids.clone()
    later[0, i:] = (later[0, i:] + 1) % VOCAB                                  # clean tokens ≥ i
    other_noise = noisy.clone()
    other_noise[0, [0, 1, 2, 4, 5]] += 1.0                                      # other noisy positions
    earlier = input_ids.clone()
    earlier[0, i - 1] = (earlier[0, i - 1] + 1) % VOCAB
    assert torch.allclose(model.forward_block(1, later, noisy, 0.5).logits[0, i], base[0, i], atol=1e-5)
    assert torch.allclose(model.forward_block(1, input_ids, other_noise, 0.5).logits[0, i], base[0, i], atol=1e-5)
    assert not torch.allclose(model.forward_block(1, earlier, noisy, 0.5).logits[0, i], base[0, i], atol=1e-3)
    own_noise = noisy.clone()
    own_noise[0, i] += 1.0
    assert not torch.allclose(model.forward_block(1, input_ids, own_noise, 0.5).logits[0, i], base[0, i], atol=1e-3)


def test_training_pass_equals_cached_inference_pass():
    """The joint two-stream pass (training) and clean cache + noisy queries (generation) are the same function."""
    model = tiny_model(num_hidden_layers=8)                                     # 2 layers a block
    input_ids = prompt(batch=2, length=7)
    noisy = torch.randn(2, 7, model.config.target_embedding_dim, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.2, 3.0])
    for block_index in range(4):
        expected = model.forward_block(block_index, input_ids, noisy, sigma).logits
        block, cache = model.get_block(block_index), DynamicCache(config=model.config)
        positions = torch.arange(7)[None]
        block.forward_clean(input_ids, positions, cached_clean_attention_mask(torch.ones(2, 7, dtype=torch.bool), 7), cache)
        preconditioning = model.config.preconditioning
        mask = noisy_query_attention_mask(torch.ones(2, 7, dtype=torch.bool), torch.arange(7))  # token i sees clean < i
        logits = block.forward_noisy(
            preconditioning.scale_input(noisy, sigma), block.noise_conditioning(preconditioning.c_noise(sigma)[:, None].expand(2, 7)),
            positions.expand(2, 7), mask, cache,
        )
        assert torch.allclose(logits, expected, atol=1e-5), block_index
        # the generation call that folds the clean pass in: whole sequence and all queries, from an empty cache
        fused_cache = DynamicCache(config=model.config)
        fused = block.forward_noisy(
            preconditioning.scale_input(noisy, sigma), block.noise_conditioning(preconditioning.c_noise(sigma)[:, None].expand(2, 7)),
            positions.expand(2, 7), fused_step_attention_mask(torch.ones(2, 7, dtype=torch.bool), 7, torch.arange(7)),
            fused_cache, new_input_ids=input_ids, new_position_ids=positions,
        )
        assert torch.allclose(fused, expected, atol=1e-5), block_index
        for layer_index in range(block.first_layer_index, block.first_layer_index + len(block.layers)):
            assert torch.allclose(fused_cache.layers[layer_index].keys, cache.layers[layer_index].keys, atol=1e-5)
            assert torch.allclose(fused_cache.layers[layer_index].values, cache.layers[layer_index].values, atol=1e-5)


# ---- target embeddings and loss ---------------------------------------------------------------
def test_target_embeddings_are_fixed_by_the_config_and_scaled_to_sigma_data():
    first, second = DiffusionBlocksForCausalLM(tiny_config()), DiffusionBlocksForCausalLM(tiny_config())
    assert torch.equal(first.target_embeddings, second.target_embeddings)
    assert "target_embeddings" not in first.state_dict()                        # rebuilt, never trained or saved
    assert not any(p is first.target_embeddings for p in first.parameters())
    assert not torch.equal(first.target_embeddings, make_target_embeddings(VOCAB, 16, 0.5, seed=1))
    table = make_target_embeddings(4096, 16, 0.5, seed=0)
    assert abs(float(table.std()) - 0.5) < 0.01


def test_default_target_width_puts_the_identification_transition_inside_the_noise_range():
    """d = 16 at std σ_data: z identifies its token at the lowest block boundary, not at the highest (see target_embeddings.py)."""
    table = make_target_embeddings(2048, 16, 0.5, seed=0)
    assert posterior_entropy(table, 0.134, num_samples=500) < 0.02                 # block 3 boundary: identified
    assert 0.3 < posterior_entropy(table, 0.677, num_samples=500) < 0.8            # block 0/1 boundary: in between
    assert posterior_entropy(table, 3.0, num_samples=500) > 0.9                    # high noise: unknown
    assert posterior_entropy(make_target_embeddings(2048, 128, 0.5, seed=0), 0.677, num_samples=500) < 0.02


def two_cluster_readout(hidden=32, seed=0):
    """A readout `(VOCAB, hidden)` whose first half of the vocabulary points one way and second half another."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(2, hidden, generator=generator) * 3
    return centres.repeat_interleave(VOCAB // 2, dim=0) + 0.1 * torch.randn(VOCAB, hidden, generator=generator)


def test_semantic_table_keeps_the_readouts_neighbours_at_the_random_tables_scale():
    readout = two_cluster_readout()
    table = semantic_target_embeddings(readout, 16, sigma_data=0.5)
    assert table.shape == (VOCAB, 16) and table.dtype == torch.float32
    assert float(table.pow(2).mean().sqrt()) == pytest.approx(0.5, rel=1e-5)
    assert torch.equal(table, semantic_target_embeddings(readout.clone(), 16, sigma_data=0.5))   # deterministic
    distances = torch.cdist(table, table)
    same, other = distances[:20, :20].mean(), distances[:20, 20:].mean()
    assert same < 0.2 * other
    assert torch.allclose(semantic_target_embeddings(-readout, 16, 0.5), table, atol=1e-5)      # signs fixed
    with pytest.raises(ValueError, match="hidden >= target_embedding_dim=64"):
        semantic_target_embeddings(readout, 64, 0.5)
    with pytest.raises(ValueError, match="no variance"):
        semantic_target_embeddings(torch.zeros(VOCAB, 32), 16, 0.5)


def given_table_model(table, seed=0, **overrides):
    model = DiffusionBlocksForCausalLM(tiny_config(target_embedding_sha256=target_embedding_digest(table), **overrides))
    model.set_target_embeddings(table)
    return randomize_(model, seed=seed, std=0.2).eval()


def test_a_given_table_travels_in_every_block_file_and_is_checked(tmp_path):
    table = semantic_target_embeddings(two_cluster_readout(), 16, 0.5)
    model = given_table_model(table)
    assert torch.equal(model.target_embeddings, table)
    model.save_pretrained(tmp_path / "given")
    loaded = DiffusionBlocksForCausalLM.from_pretrained(tmp_path / "given")
    assert torch.equal(loaded.target_embeddings, table)
    def generate(m):
        return m.generate(prompt(), max_new_tokens=6, generator=torch.Generator().manual_seed(3))

    assert torch.equal(generate(model), generate(loaded))
    one = DiffusionBlocksForCausalLM.from_pretrained(tmp_path / "given", block_index=2)
    assert torch.equal(one.target_embeddings, table) and "blocks.2.target_embeddings" in one.block_state_dict(2)
    # a block of the same architecture trained on another table is refused, naming the field
    other = given_table_model(semantic_target_embeddings(two_cluster_readout(seed=1), 16, 0.5))
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "given" / "block_1.safetensors").write_bytes((tmp_path / "other" / "block_1.safetensors").read_bytes())
    with pytest.raises(ValueError, match="target_embedding_sha256"):
        DiffusionBlocksForCausalLM.from_pretrained(tmp_path / "given")


def test_a_given_table_must_be_set_before_use_and_must_match_the_digest():
    table = semantic_target_embeddings(two_cluster_readout(), 16, 0.5)
    model = DiffusionBlocksForCausalLM(tiny_config(target_embedding_sha256=target_embedding_digest(table))).eval()
    with pytest.raises(ValueError, match="has not been set"):
        model.generate(prompt(), max_new_tokens=2)
    with pytest.raises(ValueError, match="has not been set"):
        CausalLMDenoisingLoss(model.config)(model, 0, prompt(), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="not this config's"):
        model.set_target_embeddings(table + 1e-3)
    with pytest.raises(ValueError, match="cannot be set"):
        tiny_model().set_target_embeddings(table)
    with pytest.raises(ValueError, match="target_embedding_sha256 must be"):
        tiny_config(target_embedding_sha256="abc")


def test_solver_is_an_inference_setting_and_not_part_of_a_blocks_identity(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    loaded = DiffusionBlocksForCausalLM.from_pretrained(tmp_path, config=tiny_config(solver="ancestral"))
    assert loaded.config.solver == "ancestral"


def test_denoised_estimate_is_softmax_times_table():
    model = tiny_model()
    out = model.forward_block(0, prompt(), torch.zeros(2, 6, 16), 1.0)
    expected = out.logits.softmax(-1) @ model.target_embeddings
    assert torch.allclose(out.denoised, expected, atol=1e-6)


def test_training_loss_uses_only_one_block():
    model = randomize_(DiffusionBlocksForCausalLM(tiny_config()), std=0.2).train()
    loss = CausalLMDenoisingLoss(model.config)(model, 2, prompt(), torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0
    for name, parameter in model.named_parameters():
        has_gradient = parameter.grad is not None and parameter.grad.abs().sum() > 0
        assert has_gradient == name.startswith("blocks.2."), name


def test_loss_draws_sigma_per_token_inside_the_block_interval(monkeypatch):
    model = tiny_model()
    seen = {}
    original = model.forward_block

    def spy(block_index, input_ids, noisy, sigma, **kwargs):
        seen["sigma"] = sigma
        return original(block_index, input_ids, noisy, sigma, **kwargs)

    monkeypatch.setattr(model, "forward_block", spy)
    CausalLMDenoisingLoss(model.config)(model, 1, prompt(batch=3, length=8), torch.Generator().manual_seed(0))
    low, high = model.config.noise_partition.training_interval(1)
    assert seen["sigma"].shape == (3, 8) and seen["sigma"].unique().numel() == 24
    assert bool(((seen["sigma"] >= low) & (seen["sigma"] <= high)).all())


@pytest.mark.parametrize("weight", [0.5, 3.0])
def test_clean_loss_adds_the_clean_streams_next_token_cross_entropy(weight):
    input_ids, block_index = prompt(batch=3, length=8), 1
    plain = tiny_model(num_hidden_layers=8)
    weighted = tiny_model(num_hidden_layers=8, clean_loss_weight=weight)
    losses = [CausalLMDenoisingLoss(model.config)(model, block_index, input_ids, torch.Generator().manual_seed(0))
              for model in (plain, weighted)]
    # the clean stream of the training pass never sees a noisy key: it is the cached inference pass's clean stream
    block = weighted.get_block(block_index)
    clean_logits = block.readout_clean(block.forward_clean(input_ids, torch.arange(8)[None]))
    next_token = torch.nn.functional.cross_entropy(clean_logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten())
    torch.testing.assert_close(losses[1] - losses[0], weight * next_token, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="clean_loss_weight"):
        tiny_config(clean_loss_weight=-1.0)


def test_clean_logits_are_returned_only_when_asked():
    model, input_ids = tiny_model(), prompt()
    noisy = model.target_embeddings[input_ids]
    assert model.forward_block(0, input_ids, noisy, 1.0).clean_logits is None
    output = model.forward_block(0, input_ids, noisy, 1.0, output_clean_logits=True, return_dict=False)
    assert len(output) == 3 and output[2].shape == (2, 6, VOCAB)


# ---- generation -------------------------------------------------------------------------------
@pytest.mark.parametrize("sampling", [dict(do_sample=False), dict(do_sample=True, temperature=0.8, top_k=10, top_p=0.9)])
def test_generate_with_and_without_cache_gives_the_same_tokens(sampling):
    model = tiny_model()
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        outputs.append(model.generate(prompt(), max_new_tokens=8, use_cache=use_cache, **sampling))
    assert outputs[0].shape == (2, 14)
    assert torch.equal(outputs[0], outputs[1])


def use_unfused_generation(model, monkeypatch):
    """Make `model` generate as before the cache pass was folded into the Euler steps: every block's clean
    stream first appends the new tokens in a pass of its own, then every step runs the noisy query alone."""
    fused = modeling_causal_lm.sample_next_token_logits

    def unfused(sampling_model, queries, cache, *args, **kwargs):
        assert sampling_model is model
        clean_mask = cached_clean_attention_mask(queries.key_padding, queries.new_input_ids.shape[1])
        for block_index in range(model.config.num_blocks):
            model.get_block(block_index).forward_clean(queries.new_input_ids, queries.new_position_ids, clean_mask, cache)
        no_new_tokens = dataclasses.replace(queries, new_input_ids=None, new_position_ids=None)
        return fused(sampling_model, no_new_tokens, cache, *args, **kwargs)          # no new tokens: unfused

    monkeypatch.setattr(modeling_causal_lm, "sample_next_token_logits", unfused)


@pytest.mark.parametrize("num_inference_steps, partition", [(None, "equiprobable"), (4, "uniform_log"), (7, "equiprobable")],
                         ids=["one_per_block", "a_block_unvisited", "more_than_blocks"])
@pytest.mark.parametrize("sampling", [dict(do_sample=False), dict(do_sample=True, temperature=0.9, top_k=10)], ids=["greedy", "sampled"])
@pytest.mark.parametrize("batch", [1, 3])
def test_folded_cache_pass_generates_the_same_tokens_as_separate_passes(num_inference_steps, partition, sampling, batch,
                                                                        monkeypatch):
    """Folding each block's cache extension into its first Euler step changes no token: batch 1, and a batch
    with left padding; greedy and sampled (ε and the token draws from fixed generators); with one Euler step
    per block, with a block no step visits (uniform_log, 4 steps on 4 blocks routes [0, 1, 2, 2]: block 3
    extends its cache alone) and with more steps (a block's later steps have no cache pass to fold)."""
    input_ids = prompt(batch=batch, length=6)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1:, :2] = 0                                                  # rows after the first: 2 pads
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    outputs = []
    for fold in (True, False):
        model = tiny_model(num_hidden_layers=8, partition=partition)  # 2 layers a block: a clean row feeds the cache
        if not fold:
            use_unfused_generation(model, monkeypatch)
        torch.manual_seed(0)
        outputs.append(model.generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=10, num_inference_steps=num_inference_steps,
            generator=torch.Generator().manual_seed(1), **sampling,
        ))
    assert outputs[0].shape == (batch, 16)
    assert torch.equal(outputs[0], outputs[1])


def test_generation_runs_every_layer_once_per_token_with_one_step_per_block(monkeypatch):
    """With one Euler step per block a generated token costs one pass of each layer (over the new clean token
    and the noisy query), as end to end; with two steps per block the second has no cache pass to fold."""
    model = tiny_model()
    calls = []
    for index, layer in enumerate(layer for block in model.blocks.values() for layer in block.layers):
        layer.register_forward_hook(lambda module, args, output, index=index: calls.append((index, args[0].shape[1])))
    monkeypatch.setattr(CausalLMBlock, "forward_clean", lambda *args, **kwargs: pytest.fail("separate cache pass"))
    model.generate(prompt(batch=2), max_new_tokens=3, do_sample=False)          # the prompt, then 2 decoded tokens
    assert sorted(index for index, _ in calls) == [index for index in range(4) for _ in range(3)]
    assert [positions for _, positions in calls[4:]] == [2] * 8                 # new clean token + noisy query
    calls.clear()
    model.generate(prompt(batch=2), max_new_tokens=3, do_sample=False, num_inference_steps=8)
    assert [positions for _, positions in calls[8:]] == [2, 1] * 8             # fused first step, noisy-only second


def test_generate_runs_one_euler_step_per_block_from_the_highest_noise(monkeypatch):
    model = tiny_model()
    calls, conditionings = [], []
    for block_index in range(4):
        block = model.get_block(block_index)
        original_forward, original_conditioning = block.forward_noisy, block.noise_conditioning

        def spy_forward(scaled, noise_conditioning, *args, block_index=block_index, original=original_forward, **kwargs):
            calls.append((block_index, noise_conditioning))
            return original(scaled, noise_conditioning, *args, **kwargs)

        def spy_conditioning(c_noise, block_index=block_index, original=original_conditioning):
            output = original(c_noise)
            conditionings.append((block_index, float(c_noise.flatten()[0]), output))
            return output

        monkeypatch.setattr(block, "forward_noisy", spy_forward)
        monkeypatch.setattr(block, "noise_conditioning", spy_conditioning)
    model.generate(prompt(batch=1), max_new_tokens=2, do_sample=False)
    assert [b for b, _ in calls] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [b for b, _, _ in conditionings] == [0, 1, 2, 3]                      # once per generate() call
    assert all(used is made for (_, used), (_, _, made) in zip(calls, conditionings + conditionings))
    sigmas = [torch.tensor(4 * c).exp().item() for _, c, _ in conditionings]     # c_noise = ¼ ln σ
    assert sigmas[0] == pytest.approx(80.0, rel=1e-4)
    assert sigmas == sorted(sigmas, reverse=True)
    assert model.generate(prompt(batch=1), max_new_tokens=1, num_inference_steps=8).shape == (1, 7)
    assert len(calls) == 8 + 8 and len(conditionings) == 4 + 8


def test_generation_is_reproducible_with_a_generator_and_random_without():
    model = tiny_model()
    greedy = [model.generate(prompt(), max_new_tokens=10, do_sample=False, generator=torch.Generator().manual_seed(seed))
              for seed in (3, 3, 4)]
    assert torch.equal(greedy[0], greedy[1])
    assert not torch.equal(greedy[0], greedy[2])   # the initial noise σ_max·ε is the randomness of greedy too
    def sample(seed):   # ε from the generator; the token draw from torch's global generator, as in transformers
        torch.manual_seed(0)
        return model.generate(prompt(), max_new_tokens=10, do_sample=True, top_k=0, generator=torch.Generator().manual_seed(seed))

    first, second, other = sample(3), sample(3), sample(4)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def reference_ancestral_logits(model, input_ids, seed):
    """The ancestral chain for the token after `input_ids`, written out on whole sequences with `forward_block`
    (no cache, no fused pass): z = σ_max·ε; at each step a token y is drawn from the readout at the noisy
    position, and z ← E[y] + r²(z − E[y]) + σ_next·√(1 − r²)·ε' with r = σ_next/σ. The draws are made in the
    order generation makes them: ε, then per step the Gumbel uniforms and ε'."""
    config, generator = model.config, torch.Generator().manual_seed(seed)
    batch, length = input_ids.shape
    scheduler = DiffusionBlocksScheduler(**config.scheduler_kwargs())
    scheduler.set_timesteps(config.num_blocks)
    extended = torch.cat([input_ids, torch.zeros(batch, 1, dtype=torch.long)], dim=1)   # position `length`: the query
    z = torch.randn(batch, 1, config.target_embedding_dim, generator=generator) * scheduler.init_noise_sigma
    for step, (sigma, block_index) in enumerate(zip(scheduler.timesteps, scheduler.block_indices.tolist())):
        noisy = torch.zeros(batch, length + 1, config.target_embedding_dim)
        noisy[:, length:] = z                          # other noisy positions: never seen by the query
        logits = model.forward_block(block_index, extended, noisy, float(sigma)).logits[:, length:]
        if step == len(scheduler.timesteps) - 1:       # the last readout gives the token; no step to σ = 0
            break
        uniform = torch.rand(logits.shape, generator=generator)
        token = (logits - (-uniform.log()).log()).argmax(-1)
        clean = model.target_embeddings[token]
        sigma_next = scheduler.sigmas[step + 1]
        ratio_squared = (sigma_next / sigma) ** 2
        z = clean + ratio_squared * (z - clean)
        if sigma_next > 0:
            z = z + sigma_next * (1 - ratio_squared).sqrt() * torch.randn(z.shape, generator=generator)
    return logits


def test_ancestral_generation_is_the_token_draw_and_bridge_chain():
    model = tiny_model(num_hidden_layers=8)
    input_ids = prompt(batch=3)
    logits = model(input_ids, logits_to_keep=1, solver="ancestral", generator=torch.Generator().manual_seed(5)).logits
    torch.testing.assert_close(logits, reference_ancestral_logits(model, input_ids, seed=5), rtol=1e-4, atol=1e-4)
    euler = model(input_ids, logits_to_keep=1, solver="euler", generator=torch.Generator().manual_seed(5)).logits
    assert not torch.allclose(logits, euler, atol=1e-3)


def test_ancestral_solver_from_the_config_and_from_generate():
    model = tiny_model()
    def run(**kwargs):
        return model.generate(prompt(), max_new_tokens=8, do_sample=False, generator=torch.Generator().manual_seed(2), **kwargs)

    assert model.config.solver == "ancestral"                                  # the default: measured best
    ancestral, euler = run(), run(solver="euler")
    assert torch.equal(ancestral, run(solver="ancestral")) and not torch.equal(ancestral, euler)
    model.config.solver = "euler"
    assert torch.equal(run(), euler) and torch.equal(run(solver="ancestral"), ancestral)
    with pytest.raises(ValueError, match="solver must be one of"):
        tiny_config(solver="heun")


def test_start_from_zero_is_the_noise_free_trajectory(monkeypatch):
    model = tiny_model()
    input_ids = prompt()
    zero_start = model(input_ids, start_from_noise=False, solver="euler").logits   # the ODE: no other randomness
    monkeypatch.setattr(torch, "randn", lambda shape, **kwargs: torch.zeros(shape))
    assert torch.equal(model(input_ids, solver="euler").logits, zero_start)


def test_left_padding_does_not_change_generation():
    model = tiny_model()
    short = prompt(batch=1, length=4)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1)
    attention_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    alone = model.generate(short, max_new_tokens=6, generator=torch.Generator().manual_seed(5))
    batched = model.generate(padded, attention_mask=attention_mask, max_new_tokens=6,
                             generator=torch.Generator().manual_seed(5))
    assert torch.equal(alone[:, 4:], batched[:, 7:])


# Token ids generated by the sampler as it stood before it moved onto the shared routed loop
# (modeling/routed_sampling.py): the move changed no token. A left-padded batch of 3, 8 new tokens each.
PINNED_GENERATIONS = {
    "euler_greedy": (dict(), dict(solver="euler", do_sample=False), [
        [31, 31, 9, 31, 31, 37, 37, 0], [37, 31, 37, 0, 31, 37, 37, 31], [27, 31, 27, 31, 37, 37, 13, 37]]),
    "ancestral_greedy": (dict(), dict(solver="ancestral", do_sample=False), [
        [0, 31, 31, 31, 37, 31, 0, 27], [31, 31, 31, 27, 37, 31, 31, 37], [0, 0, 0, 0, 27, 0, 11, 31]]),
    "ancestral_sampled": (dict(), dict(solver="ancestral", do_sample=True, temperature=0.9, top_k=10), [
        [11, 27, 11, 0, 37, 27, 37, 9], [0, 0, 0, 11, 31, 0, 13, 27], [13, 11, 0, 0, 17, 0, 26, 22]]),
    "euler_more_steps_than_blocks": (dict(num_hidden_layers=8), dict(solver="euler", do_sample=False, num_inference_steps=7), [
        [25, 15, 10, 10, 10, 10, 25, 10], [3, 26, 8, 10, 26, 25, 8, 26], [10, 10, 26, 30, 8, 26, 26, 26]]),
    "ancestral_a_block_unvisited": (
        dict(num_hidden_layers=8, partition="uniform_log"), dict(solver="ancestral", do_sample=False, num_inference_steps=4), [
            [9, 24, 14, 14, 24, 24, 24, 24], [24, 9, 33, 21, 6, 21, 24, 24], [0, 25, 24, 25, 24, 24, 6, 24]]),
}


@pytest.mark.parametrize("name", list(PINNED_GENERATIONS))
def test_generate_reproduces_the_pinned_token_ids(name):
    overrides, arguments, expected = PINNED_GENERATIONS[name]
    model = tiny_model(**overrides)
    input_ids = prompt(batch=3, length=6)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1:, :2] = 0                                                  # rows after the first: 2 pads
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    torch.manual_seed(0)                                                        # transformers' token draws
    output = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8,
                            generator=torch.Generator().manual_seed(1), **arguments)
    assert output[:, 6:].tolist() == expected


def test_generate_stops_at_eos_and_pads_finished_rows(monkeypatch):
    model = tiny_model()
    original = modeling_causal_lm.sample_next_token_logits

    def eos_after_two(*args, **kwargs):
        logits = original(*args, **kwargs)
        if eos_after_two.calls >= 2:
            logits[0, :, model.config.eos_token_id] = 1e4                         # row 0 ends at its 3rd token
        eos_after_two.calls += 1
        return logits

    eos_after_two.calls = 0
    monkeypatch.setattr(modeling_causal_lm, "sample_next_token_logits", eos_after_two)
    output = model.generate(prompt(), max_new_tokens=6, do_sample=False)
    new = output[:, 6:]
    assert new[0, 2] == model.config.eos_token_id and bool((new[0, 3:] == model.config.pad_token_id).all())
    assert new.shape[1] == 6 and not bool((new[1] == model.config.eos_token_id).any())


def test_end_to_end_baseline_is_an_ordinary_causal_lm():
    model = tiny_model(num_blocks=1, objective="next_token")
    assert not hasattr(model.get_block(0), "noisy_input")
    input_ids = prompt(length=8)
    out = model(input_ids, labels=input_ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, expected)
    assert torch.allclose(model.forward_block(0, input_ids).logits, out.logits, atol=1e-5)
    assert torch.equal(model.generate(input_ids, max_new_tokens=6, do_sample=False),
                       model.generate(input_ids, max_new_tokens=6, do_sample=False, use_cache=False))
    with pytest.raises(ValueError, match="needs num_blocks=1"):
        tiny_config(objective="next_token")
    with pytest.raises(ValueError, match="labels are only supported"):
        tiny_model()(input_ids, labels=input_ids)


# ---- save / load ------------------------------------------------------------------------------
def test_save_load_generate_is_identical_and_auto_classes_work(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = DiffusionBlocksForCausalLM.from_pretrained(tmp_path)
    auto = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DiffusionBlocksCausalLMConfig)
    assert isinstance(auto, DiffusionBlocksForCausalLM) and auto.is_complete
    tokens = [m.generate(prompt(), max_new_tokens=8, generator=torch.Generator().manual_seed(7)) for m in (model, loaded, auto)]
    assert torch.equal(tokens[0], tokens[1]) and torch.equal(tokens[0], tokens[2])
    assert torch.equal(loaded.target_embeddings, model.target_embeddings)


def test_per_block_loading_holds_a_quarter_of_the_parameters(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    total = sum(p.numel() for p in model.parameters())
    for block_index in range(4):
        one = DiffusionBlocksForCausalLM.from_pretrained(tmp_path, block_index=block_index)
        count = sum(p.numel() for p in one.parameters())
        assert one.loaded_block_indices == [block_index]
        assert count == model.num_block_parameters(block_index) == total // 4
    with pytest.raises(ValueError, match="needs all 4 blocks"):
        one.generate(prompt(), max_new_tokens=2)


# ---- bad inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(input_ids=torch.randint(2, VOCAB, (1, 24)), max_new_tokens=1), "max_position_embeddings=24"),
        (dict(input_ids=torch.randint(2, VOCAB, (1, 20)), max_new_tokens=5), "lower max_new_tokens to at most 4"),
        (dict(do_sample=True, top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(do_sample=True, temperature=0.0), "temperature must be > 0"),
        (dict(do_sample=True, temperature=-1.0), "temperature must be > 0"),
        (dict(do_sample=True, top_k=-3), "top_k must be an integer >= 0"),
        (dict(num_inference_steps=0), "num_inference_steps must be an integer >= 1"),
        (dict(solver="heun"), r"solver must be one of \['euler', 'ancestral'\]"),
        (dict(max_new_tokens=0), "max_new_tokens"),  # transformers refuses it first, naming it
    ],
)
def test_bad_generate_arguments_raise_clear_errors(arguments, message):
    model = tiny_model()
    arguments.setdefault("input_ids", prompt())
    arguments.setdefault("max_new_tokens", 2)
    with pytest.raises(ValueError, match=message):
        model.generate(**arguments)


def test_bad_forward_inputs_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.randint(2, VOCAB, (1, 25)))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 39\]"):
        model(torch.full((1, 3), VOCAB))
    with pytest.raises(ValueError, match="noisy_embeddings must have shape"):
        model.forward_block(0, prompt(), torch.zeros(2, 6, 3), 1.0)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(prompt(), attention_mask=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="objective must be one of"):
        tiny_config(objective="masked")


def test_a_block_saved_before_a_field_existed_is_compared_with_the_fields_default():
    config = tiny_config()
    older = {key: value for key, value in config.architecture_dict().items() if key != "clean_loss_weight"}
    assert config.differing_fields(older) == []
    assert tiny_config(clean_loss_weight=1.0).differing_fields(older) == ["clean_loss_weight"]
    assert config.differing_fields({**older, "clean_loss_weight": 0.5}) == ["clean_loss_weight"]
