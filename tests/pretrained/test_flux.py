"""Flux: two layer lists sliced as one stack, the routed model in `FluxPipeline`, block boundaries anywhere, fine-tuning."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer
from hf_diffusionblocks.pretrained.finetuning import BlockFinetuningModel, NativeObjective, SourceTeacher, finetuning_loss
from hf_diffusionblocks.pretrained.lora import LoraSettings
from hf_diffusionblocks.pretrained.modeling_routed import RoutedFluxTransformer2DModel, load_routed_transformer
from hf_diffusionblocks.pretrained.converted_folder import read_manifest
from hf_diffusionblocks.pretrained.time_axis import sampling_steps_per_block
from hf_diffusionblocks.training.pretrained_task import load_finetuning_data
from script_testing import load_script
from tiny_models import pipeline_call_arguments, random_inputs, save_pipeline_folder, tiny_flux, tiny_pipeline, tiny_transformer
from conftest import randomize_

STACK = ("transformer_blocks", "single_transformer_blocks")


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    """A FluxPipeline folder with 2 double-stream then 2 single-stream layers (L = 4)."""
    return save_pipeline_folder("flux", tmp_path_factory.mktemp("flux"))


@pytest.fixture(scope="module")
def deep_flux_folder(tmp_path_factory):
    """3 double-stream then 3 single-stream layers (L = 6): block boundaries in either list or between them."""
    torch.manual_seed(0)
    transformer = randomize_(tiny_flux(3, 3), seed=5, std=0.2).eval()
    return save_pipeline_folder("flux", tmp_path_factory.mktemp("flux6"), transformer), transformer


def convert(folder, out, num_blocks, **kwargs):
    kwargs.setdefault("init", "contiguous")  # these tests check slices of the stack; strided: test_initial_layers.py
    convert_pretrained_transformer(str(folder), str(out), num_blocks, **kwargs)
    return out


def count_calls(module, counter, key):
    module.register_forward_hook(lambda *_: counter.__setitem__(key, counter[key] + 1))


def test_one_block_reproduces_the_transformer_and_the_flux_pipeline_bit_for_bit(flux_folder, tmp_path):
    out = convert(flux_folder, tmp_path / "b1", 1)
    routed = load_routed_transformer(str(out))
    assert type(routed) is RoutedFluxTransformer2DModel and len(routed.blocks["0"]) == 4
    inputs = random_inputs("flux", 3, torch.tensor([1.0, 0.5, 0.01]))
    with torch.no_grad():
        assert torch.equal(tiny_transformer("flux")(**inputs).sample, routed(**inputs).sample)

    arguments = dict(num_inference_steps=4, output_type="np")
    reference = tiny_pipeline("flux")(**pipeline_call_arguments("flux"), generator=torch.Generator().manual_seed(0), **arguments).images
    pipe = tiny_pipeline("flux", routed)
    images = pipe(**pipeline_call_arguments("flux"), generator=torch.Generator().manual_seed(0), **arguments).images
    assert (images == reference).all()


@pytest.mark.parametrize("num_blocks", [2, 4])
def test_every_pipeline_call_runs_l_over_b_layers(flux_folder, tmp_path, num_blocks):
    out = convert(flux_folder, tmp_path / f"b{num_blocks}", num_blocks)
    pipe = tiny_pipeline("flux", RoutedFluxTransformer2DModel.from_pretrained(str(out)))
    counter = {"layers": 0, "calls": 0}
    count_calls(pipe.transformer, counter, "calls")
    for block in pipe.transformer.blocks.values():
        for layer in block:
            count_calls(layer, counter, "layers")
    ran = []
    original = pipe.transformer.run_block
    pipe.transformer.run_block = lambda b, arguments: (ran.append(b), original(b, arguments))[1]
    pipe(**pipeline_call_arguments("flux"), generator=torch.Generator().manual_seed(0), num_inference_steps=8, output_type="np")
    assert counter["calls"] == 16  # 8 steps, true CFG: a conditional and an unconditional call each
    assert counter["layers"] == counter["calls"] * 4 // num_blocks
    assert ran == sorted(ran) and set(ran) == set(range(num_blocks))  # high noise first, every block used
    # what `convert` reports for FluxPipeline (its own sigmas) is what the pipeline ran
    counts = sampling_steps_per_block(pipe.transformer.time_partition, pipe.scheduler, 8, "FluxPipeline")
    assert [2 * count for count in counts] == [ran.count(b) for b in range(num_blocks)]


def sliced_source(transformer, layers: range, num_double: int):
    """The source class holding only `layers` of the stack (and all the stems): what block b must compute."""
    double = [i for i in layers if i < num_double]
    single = [i - num_double for i in layers if i >= num_double]
    model = tiny_flux(len(double), len(single))
    source = transformer.state_dict()
    state = {name: tensor for name, tensor in source.items() if not name.startswith(STACK)}
    for new, old in enumerate(double):
        state.update({f"transformer_blocks.{new}.{k[len(f'transformer_blocks.{old}.'):]}": v
                      for k, v in source.items() if k.startswith(f"transformer_blocks.{old}.")})
    for new, old in enumerate(single):
        state.update({f"single_transformer_blocks.{new}.{k[len(f'single_transformer_blocks.{old}.'):]}": v
                      for k, v in source.items() if k.startswith(f"single_transformer_blocks.{old}.")})
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("layers_per_block, where", [([2, 4], "inside the double list"), ([3, 3], "between the lists"),
                                                     ([4, 2], "inside the single list"), ([2, 2, 2], "both")])
def test_a_block_boundary_anywhere_runs_exactly_its_slice_of_the_stack(deep_flux_folder, tmp_path, layers_per_block, where):
    folder, transformer = deep_flux_folder
    out = convert(folder, tmp_path / "out", len(layers_per_block), layers_per_block=layers_per_block)
    manifest = json.loads((out / "diffusion_blocks.json").read_text())
    assert manifest["layer_list"] == [["transformer_blocks", 3], ["single_transformer_blocks", 3]]
    routed = RoutedFluxTransformer2DModel.from_pretrained(str(out))
    partition = routed.time_partition
    mids = []
    start = 0
    for b, count in enumerate(layers_per_block):
        # block files keep the source names of their slice of the stack
        expected = {f"transformer_blocks.{i}" if i < 3 else f"single_transformer_blocks.{i - 3}" for i in range(start, start + count)}
        assert {".".join(name.split(".")[:2]) for name in load_file(out / f"block_{b}.safetensors")} == expected
        low, high = partition.block_interval(b)
        mid = (low + high) / 2 / 1000  # the forward takes flow time in [0, 1]
        mids.append(mid)
        inputs = random_inputs("flux", 2, torch.tensor([mid, mid]), seed=b)
        with torch.no_grad():
            assert torch.equal(routed(**inputs).sample, sliced_source(transformer, range(start, start + count), 3)(**inputs).sample), where
        start += count
    # a batch whose samples fall in different blocks: each part runs its own block
    inputs = random_inputs("flux", len(mids), torch.tensor(mids), seed=9)
    with torch.no_grad():
        mixed = routed(**inputs).sample
        for b in range(len(mids)):
            alone = routed(**{k: v if k in ("img_ids", "txt_ids") else v[b : b + 1] for k, v in inputs.items()}).sample
            assert torch.allclose(mixed[b : b + 1], alone, atol=1e-6)
    # stems + block files give back the source state dict exactly
    rebuilt = {**load_file(out / "stems.safetensors")}
    for b in range(len(layers_per_block)):
        rebuilt.update(load_file(out / f"block_{b}.safetensors"))
    source = transformer.state_dict()
    assert rebuilt.keys() == source.keys() and all(torch.equal(rebuilt[k], source[k]) for k in source)


def test_one_flux_block_fine_tunes_and_loads_back(deep_flux_folder, tmp_path):
    folder, transformer = deep_flux_folder
    out = convert(folder, tmp_path / "b2", 2, layers_per_block=[2, 4])  # block 1 straddles the two lists
    model = BlockFinetuningModel(str(out), 1)
    assert model.routed.loaded_block_indices == [1] and len(model.routed.blocks["1"]) == 4
    objective = NativeObjective(model.manifest)
    assert objective.prediction_type == "flow_velocity"
    stems_before = {k: v.clone() for k, v in model.routed.stems_state_dict().items()}
    block_before = {k: v.clone() for k, v in model.routed.block_state_dict(1).items()}
    optimizer = torch.optim.AdamW(model.block_parameters(1), lr=1e-2)
    inputs = random_inputs("flux", 4, torch.zeros(4))
    clean = inputs.pop("hidden_states")
    conditioning = {k: v for k, v in inputs.items() if k != "timestep"}
    losses = []
    model.train()
    for _ in range(5):
        optimizer.zero_grad()
        loss = finetuning_loss(model, 1, clean, conditioning, objective, torch.Generator().manual_seed(0))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]  # the same batch and noise: the block fits it
    assert all(torch.equal(stems_before[k], v) for k, v in model.routed.stems_state_dict().items())
    assert any(not torch.equal(block_before[k], v) for k, v in model.routed.block_state_dict(1).items())
    assert {id(p) for p in optimizer.state} <= {id(p) for p in model.routed.blocks["1"].parameters()}

    model.save_block(str(out), 1, training_steps=5)
    model.eval()
    tuned = RoutedFluxTransformer2DModel.from_pretrained(str(out))
    assert tuned.block_training_steps == {1: 5}
    timestep = torch.full((2,), 0.1)  # flow time 0.1: block 1's interval
    inputs = random_inputs("flux", 2, timestep, seed=3)
    with torch.no_grad():
        assert torch.equal(tuned(**inputs).sample, model(**inputs).sample)


def test_the_teacher_is_the_source_and_lora_round_trips(deep_flux_folder, tmp_path):
    folder, transformer = deep_flux_folder
    out = convert(folder, tmp_path / "b2", 2, layers_per_block=[4, 2])
    teacher = SourceTeacher(str(out))
    inputs = random_inputs("flux", 2, torch.tensor([0.9, 0.05]), seed=4)
    noisy, conditioning = inputs["hidden_states"], {k: v for k, v in inputs.items() if k not in ("hidden_states", "timestep")}
    with torch.no_grad():
        expected = transformer(**inputs).sample
    # the teacher takes the partition's timesteps (flow time × T)
    assert torch.allclose(teacher(noisy, inputs["timestep"] * 1000, conditioning), expected, atol=1e-6)

    model = BlockFinetuningModel(str(out), 0, lora=LoraSettings(rank=2, alpha=4.0))
    with torch.no_grad():
        for parameter in model.block_parameters(0):
            parameter.normal_(0, 0.1)
    high = random_inputs("flux", 2, torch.tensor([0.9, 0.8]), seed=6)
    with torch.no_grad():
        adapted = model(**high).sample
    model.save_block(str(tmp_path / "lora"), 0, training_steps=1)
    merged = RoutedFluxTransformer2DModel.from_pretrained(str(out), lora_dir=str(tmp_path / "lora"))
    with torch.no_grad():
        assert torch.allclose(merged(**high).sample, adapted, atol=1e-5)


def test_what_flux_refuses(flux_folder, tmp_path):
    scheduler = flux_folder / "scheduler" / "scheduler_config.json"
    dynamic = tmp_path / "dynamic"
    dynamic.mkdir()
    config = {**json.loads(scheduler.read_text()), "use_dynamic_shifting": True}
    with pytest.raises(ValueError, match="dynamic .resolution-dependent. shifting"):
        convert_pretrained_transformer(str(flux_folder), str(dynamic / "out"), 2, scheduler_config=config)
    routed = RoutedFluxTransformer2DModel.from_pretrained(str(convert(flux_folder, tmp_path / "b2", 2)))
    inputs = random_inputs("flux", 1, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="controlnet_block_samples is not supported"):
        routed(**inputs, controlnet_block_samples=[torch.zeros(1, 16, 16)])
    with pytest.raises(ValueError, match="timestep must lie in"):
        routed(**{**inputs, "timestep": torch.tensor([1.5])})


def test_gradient_checkpointing_of_a_straddling_block_gives_the_same_gradients(deep_flux_folder, tmp_path):
    folder, _ = deep_flux_folder
    out = convert(folder, tmp_path / "b2", 2, layers_per_block=[2, 4])
    gradients = []
    for checkpointing in (False, True):
        model = BlockFinetuningModel(str(out), 1)
        if checkpointing:
            model.routed.enable_gradient_checkpointing()
        model.train()
        inputs = random_inputs("flux", 2, torch.zeros(2))
        conditioning = {k: v for k, v in inputs.items() if k not in ("hidden_states", "timestep")}
        finetuning_loss(model, 1, inputs["hidden_states"], conditioning, NativeObjective(model.manifest),
                        torch.Generator().manual_seed(0)).backward()
        gradients.append([p.grad.clone() for p in model.block_parameters(1) if p.grad is not None])
    assert len(gradients[0]) == len(gradients[1]) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*gradients))


def test_the_finetuning_script_trains_one_flux_block_from_a_latents_file(deep_flux_folder, tmp_path):
    folder, _ = deep_flux_folder
    out = convert(folder, tmp_path / "b2", 2, layers_per_block=[2, 4])
    inputs = random_inputs("flux", 6, torch.zeros(6), seed=11)
    latents = {"latents": inputs.pop("hidden_states"), **{k: v for k, v in inputs.items() if k != "timestep"}}
    save_file(latents, str(tmp_path / "latents.safetensors"))  # img_ids / txt_ids: one set, no rows
    summary = load_script("finetune_pretrained").main([
        "--converted_dir", str(out), "--output_dir", str(tmp_path / "tuned"), "--latents_file", str(tmp_path / "latents.safetensors"),
        "--block_index", "1", "--train_batch_size", "4", "--max_train_steps", "3", "--logging_steps", "1",
        "--checkpointing_steps", "3", "--report_to", "none"])
    assert [block["steps"] for block in summary["blocks"]] == [3]
    tuned = RoutedFluxTransformer2DModel.from_pretrained(str(tmp_path / "tuned"))
    assert tuned.block_training_steps == {1: 3}
    original = load_file(out / "block_1.safetensors")
    assert any(not torch.equal(original[k], v) for k, v in load_file(tmp_path / "tuned" / "block_1.safetensors").items())
    save_file({"latents": torch.zeros(2, 16, 4, 4)}, str(tmp_path / "unpacked.safetensors"))
    with pytest.raises(ValueError, match=r"the model takes \(N, tokens, in_channels=16\)"):
        load_finetuning_data(read_manifest(str(out)), latents_file=str(tmp_path / "unpacked.safetensors"))
