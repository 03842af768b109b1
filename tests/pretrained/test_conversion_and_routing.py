"""Conversion of DiT / PixArt / SD3 folders, the routed transformer in diffusers' own pipelines, and named errors."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer
from hf_diffusionblocks.pretrained.modeling_routed import (
    RoutedDiTTransformer2DModel,
    RoutedPixArtTransformer2DModel,
    RoutedSD3Transformer2DModel,
    load_routed_transformer,
)
from tiny_models import NUM_LAYERS, pipeline_call_arguments, random_inputs, save_pipeline_folder, tiny_pipeline, tiny_transformer

KINDS = ["dit", "pixart", "sd3"]
ROUTED = {"dit": RoutedDiTTransformer2DModel, "pixart": RoutedPixArtTransformer2DModel, "sd3": RoutedSD3Transformer2DModel}


@pytest.fixture(scope="module")
def pipeline_folders(tmp_path_factory):
    return {kind: save_pipeline_folder(kind, tmp_path_factory.mktemp(kind)) for kind in KINDS}


def convert(folder, out, num_blocks, **kwargs):
    kwargs.setdefault("init", "contiguous")  # these tests check slices of the stack; strided: test_initial_layers.py
    convert_pretrained_transformer(str(folder), str(out), num_blocks, **kwargs)
    return out


def layer_call_counter(model):
    """Counts calls of every layer of every loaded block."""
    calls = {"layers": 0}
    for block in model.blocks.values():
        for layer in block:
            layer.register_forward_hook(lambda *_: calls.__setitem__("layers", calls["layers"] + 1))
    return calls


@pytest.mark.parametrize("kind", KINDS)
def test_one_block_routed_model_reproduces_the_source_exactly(kind, pipeline_folders, tmp_path):
    out = convert(pipeline_folders[kind], tmp_path / "b1", 1)
    routed = load_routed_transformer(str(out))
    assert type(routed) is ROUTED[kind]
    source = tiny_transformer(kind)
    top = 1000 if kind == "sd3" else 999
    inputs = random_inputs(kind, 3, torch.tensor([top, 500, 3]))
    with torch.no_grad():
        expected = source(**inputs).sample
        got = routed(**inputs).sample
    assert torch.equal(expected, got)


@pytest.mark.parametrize("kind", KINDS)
def test_blocks_are_slices_of_the_source_and_the_folder_rebuilds_it(kind, pipeline_folders, tmp_path):
    out = convert(pipeline_folders[kind], tmp_path / "b2", 2, overlap=0.1)
    manifest = json.loads((out / "diffusion_blocks.json").read_text())
    assert manifest["source_class"] == type(tiny_transformer(kind)).__name__
    assert manifest["blocks"]["0"]["layers"] == [0, 1] and manifest["blocks"]["1"]["layers"] == [2, 3]
    source = tiny_transformer(kind).state_dict()
    block_1 = load_file(out / "block_1.safetensors")
    assert sorted({name.split(".")[1] for name in block_1}) == ["2", "3"]
    rebuilt = {**load_file(out / "stems.safetensors"), **load_file(out / "block_0.safetensors"), **block_1}
    rebuilt = {name: tensor for name, tensor in rebuilt.items() if not name.startswith("output_conditioning_embedding.")}
    assert rebuilt.keys() == source.keys()
    assert all(torch.equal(rebuilt[name], source[name]) for name in source)
    # the time partition comes from the pipeline's scheduler config
    axis = manifest["time_partition"]
    assert axis["time_axis"] == ("flow" if kind == "sd3" else "ddpm") and axis["overlap"] == 0.1
    if kind == "sd3":
        assert manifest["block_timesteps"] == pytest.approx([1000.0, 750.0, 0.0])  # shift 3, logit-normal(0, 1)
    else:
        assert manifest["block_timesteps"] == [1000.0, 500.0, 0.0]


@pytest.mark.parametrize("kind", KINDS)
def test_routed_model_in_the_native_pipeline(kind, pipeline_folders, tmp_path):
    """B=1: the pipeline's images are the source's, bit for bit; B=2: every call runs L/B layers."""
    one = convert(pipeline_folders[kind], tmp_path / "b1", 1)
    two = convert(pipeline_folders[kind], tmp_path / "b2", 2)
    arguments = dict(num_inference_steps=4, output_type="np")
    reference = tiny_pipeline(kind)(**pipeline_call_arguments(kind), generator=torch.Generator().manual_seed(0), **arguments).images

    pipe = tiny_pipeline(kind)
    pipe.transformer = ROUTED[kind].from_pretrained(str(one))
    images = pipe(**pipeline_call_arguments(kind), generator=torch.Generator().manual_seed(0), **arguments).images
    assert (images == reference).all()

    pipe.transformer = ROUTED[kind].from_pretrained(str(two))
    calls = layer_call_counter(pipe.transformer)
    transformer_calls = {"count": 0}
    pipe.transformer.register_forward_hook(lambda *_: transformer_calls.__setitem__("count", transformer_calls["count"] + 1))
    images = pipe(**pipeline_call_arguments(kind), generator=torch.Generator().manual_seed(0), **arguments).images
    assert images.shape == reference.shape and transformer_calls["count"] == 4
    assert calls["layers"] == transformer_calls["count"] * NUM_LAYERS // 2  # L/B layers per step (CFG batch included)


def test_routed_pixart_in_the_sigma_pipeline(pipeline_folders, tmp_path):
    from diffusers import PixArtSigmaPipeline

    one = convert(pipeline_folders["pixart"], tmp_path / "b1", 1)
    arguments = dict(num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0))
    reference = tiny_pipeline("pixart", pixart_pipeline=PixArtSigmaPipeline)(**pipeline_call_arguments("pixart"), **arguments).images
    pipe = tiny_pipeline("pixart", RoutedPixArtTransformer2DModel.from_pretrained(str(one)), pixart_pipeline=PixArtSigmaPipeline)
    arguments["generator"] = torch.Generator().manual_seed(0)
    assert (pipe(**pipeline_call_arguments("pixart"), **arguments).images == reference).all()


def test_mixed_timestep_batch_is_split_between_blocks(pipeline_folders, tmp_path):
    out = convert(pipeline_folders["dit"], tmp_path / "b2", 2)
    routed = RoutedDiTTransformer2DModel.from_pretrained(str(out))
    calls = layer_call_counter(routed)
    inputs = random_inputs("dit", 4, torch.tensor([900, 100, 800, 0]))
    with torch.no_grad():
        mixed = routed(**inputs).sample
        for sample in range(4):
            single = routed(**{k: v[sample : sample + 1] for k, v in inputs.items()}).sample
            assert torch.allclose(mixed[sample : sample + 1], single, atol=1e-6)
    assert calls["layers"] == 2 * 2 + 4 * 2  # the mixed call ran each block once on its part


def test_loading_one_block_builds_only_its_layers(pipeline_folders, tmp_path):
    out = convert(pipeline_folders["sd3"], tmp_path / "b2", 2)
    only_low = RoutedSD3Transformer2DModel.from_pretrained(str(out), block_index=1)
    assert only_low.loaded_block_indices == [1] and len(only_low.blocks["1"]) == 2
    assert not any(p.is_meta for p in only_low.parameters())
    full = RoutedSD3Transformer2DModel.from_pretrained(str(out))
    assert sum(p.numel() for p in only_low.parameters()) < sum(p.numel() for p in full.parameters())
    inputs = random_inputs("sd3", 2, torch.tensor([100.0, 200.0]))
    with torch.no_grad():
        assert torch.equal(only_low(**inputs).sample, full(**inputs).sample)
    with pytest.raises(ValueError, match=r"fall in blocks \[0\], which are not loaded"):
        only_low(**random_inputs("sd3", 1, torch.tensor([900.0])))


def test_saved_routed_model_round_trips(pipeline_folders, tmp_path):
    out = convert(pipeline_folders["pixart"], tmp_path / "b2", 2)
    routed = RoutedPixArtTransformer2DModel.from_pretrained(str(out))
    routed.save_pretrained(tmp_path / "again")
    again = RoutedPixArtTransformer2DModel.from_pretrained(str(tmp_path / "again"))
    inputs = random_inputs("pixart", 2, torch.tensor([999, 10]))
    with torch.no_grad():
        assert torch.equal(routed(**inputs).sample, again(**inputs).sample)


def test_bad_inputs_are_named(pipeline_folders, tmp_path):
    folder = pipeline_folders["dit"]
    with pytest.raises(ValueError, match=r"num_blocks must be an integer in \[1, 4\]"):
        convert(folder, tmp_path / "x", 5)
    with pytest.raises(ValueError, match="overlap must be in"):
        convert(folder, tmp_path / "y", 2, overlap=1.0)
    hunyuan = tmp_path / "hunyuan"
    hunyuan.mkdir()
    (hunyuan / "config.json").write_text(json.dumps({"_class_name": "HunyuanDiT2DModel", "num_layers": 2}))
    with pytest.raises(ValueError, match="HunyuanDiT2DModel.*long skip connections"):
        convert(hunyuan, tmp_path / "z", 2)
    flux = tmp_path / "flux"
    flux.mkdir()
    (flux / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel", "num_layers": 2}))
    with pytest.raises(ValueError, match="needs an integer 'num_single_layers'"):
        convert(flux, tmp_path / "z", 2)
    with pytest.raises(ValueError, match="no config.json"):
        convert(tmp_path, tmp_path / "w", 2)
    # a block from another conversion (uniform vs equiprobable differs for a flow model) is refused
    sd3 = pipeline_folders["sd3"]
    equiprobable = convert(sd3, tmp_path / "equi", 2)
    uniform = convert(sd3, tmp_path / "unif", 2, partition="uniform")
    shutil.copy(uniform / "block_1.safetensors", equiprobable / "block_1.safetensors")
    with pytest.raises(ValueError, match="block of another conversion.*time_partition"):
        RoutedSD3Transformer2DModel.from_pretrained(str(equiprobable))
    with pytest.raises(ValueError, match="converted from a SD3Transformer2DModel"):
        RoutedDiTTransformer2DModel.from_pretrained(str(uniform))
    with pytest.raises(ValueError, match="already holds a converted folder"):
        convert(sd3, uniform, 2)


def test_convert_command_prints_the_partition_and_default_steps(pipeline_folders, tmp_path, capsys):
    from hf_diffusionblocks_cli import main

    assert main(["convert", str(pipeline_folders["dit"]), str(tmp_path / "out"), "--num_blocks", "4", "--overlap", "0",
                 "--transformer_only"]) == 0
    printed = capsys.readouterr().out
    # DiTPipeline's 50 default steps under DDIM ("leading": 980, 960, ..., 0) against boundaries 750/500/250
    assert "DiTPipeline default sampling (50 steps, DDIMScheduler): steps per block [12, 13, 12, 13]" in printed
    assert "[750.00, 1000.00)" in printed
    assert (tmp_path / "out" / "block_3.safetensors").is_file()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "steps per block [12, 13, 12, 13]" in card and "RoutedDiTTransformer2DModel.from_pretrained" in card
    assert main(["convert", str(pipeline_folders["dit"]), str(tmp_path / "bad"), "--num_blocks", "9"]) == 1
    assert "num_blocks must be an integer in [1, 4]" in capsys.readouterr().err


def test_info_describes_a_converted_folder_and_flags_foreign_blocks(pipeline_folders, tmp_path, capsys):
    from hf_diffusionblocks_cli import main

    out = convert(pipeline_folders["dit"], tmp_path / "b2", 2, overlap=0.0)
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "source: DiTTransformer2DModel" in printed and "[500.00, 1000.00)" in printed
    assert [line.split()[1] for line in printed.splitlines() if line.strip()[:1].isdigit() and "present" in line] == [
        "present", "present"]
    other = convert(pipeline_folders["dit"], tmp_path / "uniform", 2, partition="uniform", overlap=0.3)
    shutil.copyfile(other / "block_1.safetensors", out / "block_1.safetensors")
    assert main(["info", str(out)]) == 1
    assert "foreign" in capsys.readouterr().out


def test_routed_loader_sorts_keywords_with_the_one_table(pipeline_folders, tmp_path):
    # diffusers' pipeline loader passes these at their defaults; asked for, they are refused, not silently ignored
    out = convert(pipeline_folders["dit"], tmp_path / "b2", 2)
    loaded = RoutedDiTTransformer2DModel.from_pretrained(
        str(out), low_cpu_mem_usage=True, variant=None, quantization_config=None, torch_dtype=torch.float64, proxies=None
    )
    assert next(loaded.parameters()).dtype == torch.float64
    for name, value in [("quantization_config", {"load_in_4bit": True}), ("variant", "fp16"), ("max_memory", {0: "1GB"})]:
        with pytest.raises(ValueError, match=f"RoutedDiTTransformer2DModel.from_pretrained does not support {name}="):
            RoutedDiTTransformer2DModel.from_pretrained(str(out), **{name: value})
    with pytest.raises(ValueError, match=r"does not take: \['verify_checksums'\]"):
        RoutedDiTTransformer2DModel.from_pretrained(str(out), verify_checksums=False)
    routed = RoutedDiTTransformer2DModel.from_pretrained(str(out))
    routed.save_pretrained(str(tmp_path / "saved"), safe_serialization=True, variant=None, max_shard_size="5GB")
    with pytest.raises(ValueError, match="does not support variant='fp16'"):
        routed.save_pretrained(str(tmp_path / "saved2"), variant="fp16")


def test_info_checks_the_stems_of_a_converted_folder(pipeline_folders, tmp_path, capsys):
    from hf_diffusionblocks_cli import main

    out = convert(pipeline_folders["dit"], tmp_path / "b2", 2)
    assert main(["info", str(out)]) == 0 and "stems: present" in capsys.readouterr().out
    other = convert(pipeline_folders["pixart"], tmp_path / "pixart", 2)
    shutil.copyfile(other / "stems.safetensors", out / "stems.safetensors")
    assert main(["info", str(out)]) == 1
    assert "stems: foreign (stems.safetensors records digest" in capsys.readouterr().out
    (out / "stems.safetensors").unlink()
    assert main(["info", str(out)]) == 1
    assert "stems: missing (stems.safetensors is absent" in capsys.readouterr().out


def test_convert_reads_no_shard_outside_the_folder(pipeline_folders, tmp_path):
    """An index naming shards by `..`, an absolute path or a link out of the folder is refused before any read."""
    source = tmp_path / "source"
    shutil.copytree(pipeline_folders["dit"] / "transformer", source)
    outside = tmp_path / "outside_shard.safetensors"
    shutil.move(source / "diffusion_pytorch_model.safetensors", outside)
    (source / "link.safetensors").symlink_to(outside)
    for shard, refusal in [("../outside_shard.safetensors", "'..' are refused"), (str(outside), "absolute paths"),
                           ("link.safetensors", "leads outside")]:
        (source / "diffusion_pytorch_model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight": shard}}))
        with pytest.raises(ValueError, match=refusal):
            convert(source, tmp_path / "out", 2)
        assert not (tmp_path / "out").exists()
    # the same shard inside the folder converts
    shutil.move(outside, source / "shard-1.safetensors")
    (source / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"pos_embed.proj.weight": "shard-1.safetensors"}}))
    (source / "link.safetensors").unlink()
    assert (convert(source, tmp_path / "out", 2) / "block_1.safetensors").is_file()
