"""`convert --init strided`: which source layers each block starts from, recorded in the manifest and
followed by every name mapping (loading, saving, LoRA, the distillation teacher, `info`)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer
from hf_diffusionblocks.pretrained.converted_folder import ConversionManifest, read_manifest
from hf_diffusionblocks.pretrained.finetuning import SourceTeacher
from hf_diffusionblocks.pretrained.initial_layers import initial_source_layers, strided_layers
from hf_diffusionblocks.pretrained.modeling_routed import RoutedDiTTransformer2DModel, RoutedFluxTransformer2DModel
from conftest import randomize_
from test_flux import sliced_source
from tiny_models import random_inputs, save_pipeline_folder, tiny_flux, tiny_transformer

DIT_LAYERS = 6


@pytest.mark.parametrize("num_layers, count, expected", [
    (12, 4, [0, 4, 7, 11]),      # L = 12, B = 3
    (12, 3, [0, 6, 11]),         # L = 12, B = 4: 5.5 rounds up
    (28, 7, [0, 5, 9, 14, 18, 23, 27]),
    (6, 2, [0, 5]),
    (6, 6, [0, 1, 2, 3, 4, 5]),  # B = 1: every layer, in order
    (5, 1, [0]),
])
def test_strided_layers_spread_over_the_depth_keeping_first_and_last(num_layers, count, expected):
    assert strided_layers(num_layers, count) == expected


def test_strided_uneven_blocks_and_bad_input():
    assert initial_source_layers("strided", 6, [2, 4]) == [[0, 5], [0, 2, 3, 5]]
    assert initial_source_layers("contiguous", 6, [2, 4]) == [[0, 1], [2, 3, 4, 5]]
    with pytest.raises(ValueError, match=r"init must be one of \['contiguous', 'strided'\], got 'greedy'"):
        initial_source_layers("greedy", 6, [3, 3])
    with pytest.raises(ValueError, match=r"count must be an integer in \[1, num_layers=6\]"):
        strided_layers(6, 7)


@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    """A DiT pipeline folder with 6 random layers, and the source transformer."""
    transformer = randomize_(tiny_transformer("dit", num_layers=DIT_LAYERS), seed=3, std=0.2).eval()
    return save_pipeline_folder("dit", tmp_path_factory.mktemp("dit6"), transformer), transformer


def convert(folder, out, num_blocks, **kwargs):
    convert_pretrained_transformer(str(folder), str(out), num_blocks, **kwargs)
    return out


def truncated_dit(transformer, layers):
    """The source DiT holding only `layers` (and all its other modules): what a strided block must compute."""
    model = tiny_transformer("dit", num_layers=len(layers))
    source = transformer.state_dict()
    state = {name: tensor for name, tensor in source.items() if not name.startswith("transformer_blocks.")}
    for new, old in enumerate(layers):
        prefix = f"transformer_blocks.{old}."
        state.update({f"transformer_blocks.{new}.{k[len(prefix):]}": v for k, v in source.items() if k.startswith(prefix)})
    model.load_state_dict(state, strict=True)
    return model.eval()


def block_midpoints(partition):
    return [int((sum(partition.block_interval(b)) / 2)) for b in range(partition.num_blocks)]


def test_strided_block_computes_the_source_truncated_to_its_layers(dit_folder, tmp_path):
    folder, transformer = dit_folder
    out = convert(folder, tmp_path / "strided", 2, init="strided", layers_per_block=[2, 4])
    manifest = json.loads((out / "diffusion_blocks.json").read_text())
    assert manifest["source_layers"] == [[0, 5], [0, 2, 3, 5]] and manifest["init"] == "strided"
    assert manifest["blocks"]["1"]["layers"] == [0, 2, 3, 5]
    routed = RoutedDiTTransformer2DModel.from_pretrained(str(out))
    for b, layers in enumerate(manifest["source_layers"]):
        # each block file holds its own copy of its source layers, under their source names
        assert {".".join(name.split(".")[:2]) for name in load_file(out / f"block_{b}.safetensors")} == {
            f"transformer_blocks.{i}" for i in layers}
        timestep = block_midpoints(routed.time_partition)[b]
        inputs = random_inputs("dit", 2, torch.tensor([timestep, timestep]), seed=b)
        with torch.no_grad():
            assert torch.equal(routed(**inputs).sample, truncated_dit(transformer, layers)(**inputs).sample)
    # blocks that start from the same source layer do not share its parameters
    shared = list(routed.blocks["0"][0].parameters())[0]
    assert shared.data_ptr() != list(routed.blocks["1"][0].parameters())[0].data_ptr()


def test_one_strided_block_is_the_source_bit_for_bit(dit_folder, tmp_path):
    folder, transformer = dit_folder
    out = convert(folder, tmp_path / "b1", 1, init="strided")
    manifest = json.loads((out / "diffusion_blocks.json").read_text())
    assert "source_layers" not in manifest  # as a contiguous B = 1
    routed = RoutedDiTTransformer2DModel.from_pretrained(str(out))
    inputs = random_inputs("dit", 3, torch.tensor([999, 500, 3]))
    with torch.no_grad():
        assert torch.equal(routed(**inputs).sample, transformer(**inputs).sample)


def test_strided_flux_block_straddling_the_lists_computes_its_layers(tmp_path):
    transformer = randomize_(tiny_flux(3, 3), seed=5, std=0.2).eval()
    folder = save_pipeline_folder("flux", tmp_path / "flux6", transformer)
    out = convert(folder, tmp_path / "strided", 2, init="strided")
    assert read_manifest(str(out)).source_layers == [[0, 3, 5], [0, 3, 5]]  # one double-stream, two single-stream
    routed = RoutedFluxTransformer2DModel.from_pretrained(str(out))
    for b in range(2):
        mid = sum(routed.time_partition.block_interval(b)) / 2 / 1000
        inputs = random_inputs("flux", 2, torch.tensor([mid, mid]), seed=b)
        with torch.no_grad():
            assert torch.equal(routed(**inputs).sample, sliced_source(transformer, [0, 3, 5], 3)(**inputs).sample)


def test_saved_strided_model_round_trips_and_a_changed_block_maps_to_its_source_names(dit_folder, tmp_path):
    folder, _ = dit_folder
    out = convert(folder, tmp_path / "strided", 2, init="strided", layers_per_block=[2, 4])
    routed = RoutedDiTTransformer2DModel.from_pretrained(str(out))
    with torch.no_grad():  # "fine-tune" block 1's second layer (source layer 2)
        for parameter in routed.blocks["1"][1].parameters():
            parameter.add_(0.5)
    routed.save_pretrained(tmp_path / "again")
    again = RoutedDiTTransformer2DModel.from_pretrained(str(tmp_path / "again"))
    assert again.conversion.source_layers == [[0, 5], [0, 2, 3, 5]]
    inputs = random_inputs("dit", 2, torch.tensor([999, 10]))
    with torch.no_grad():
        assert torch.equal(routed(**inputs).sample, again(**inputs).sample)
    saved, converted = load_file(tmp_path / "again" / "block_1.safetensors"), load_file(out / "block_1.safetensors")
    changed = sorted({".".join(name.split(".")[:2]) for name in saved if not torch.equal(saved[name], converted[name])})
    assert changed == ["transformer_blocks.2"]
    assert torch.equal(saved["transformer_blocks.2.norm1.linear.weight"], routed.blocks["1"][1].norm1.linear.weight)
    # block 0 started from the same source layer 0 as block 1, and kept its own copy
    assert torch.equal(load_file(tmp_path / "again" / "block_0.safetensors")["transformer_blocks.0.ff.net.2.weight"],
                       load_file(out / "block_0.safetensors")["transformer_blocks.0.ff.net.2.weight"])


def test_the_distillation_teacher_of_a_strided_conversion_is_the_whole_source(dit_folder, tmp_path):
    folder, transformer = dit_folder
    out = convert(folder, tmp_path / "strided", 3, init="strided")
    teacher = SourceTeacher(str(out))
    assert len(teacher.model.blocks["0"]) == DIT_LAYERS
    inputs = random_inputs("dit", 2, torch.tensor([900, 20]))
    with torch.no_grad():
        assert torch.equal(teacher.model(**inputs).sample, transformer(**inputs).sample)
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    assert torch.equal(SourceTeacher(str(out), source_dir=str(moved)).model.blocks["0"][4].norm1.linear.weight,
                       transformer.transformer_blocks[4].norm1.linear.weight)
    with pytest.raises(ValueError, match="source_dir .* is not a folder: the teacher of a 'strided' conversion"):
        SourceTeacher(str(out), source_dir=str(tmp_path / "nowhere"))


def test_manifests_without_per_block_layers_load_as_contiguous(dit_folder, tmp_path):
    folder, transformer = dit_folder
    out = convert(folder, tmp_path / "old", 2, init="contiguous")
    payload = json.loads((out / "diffusion_blocks.json").read_text())
    assert "source_layers" not in payload
    del payload["init"]  # a manifest written before `init` existed
    (out / "diffusion_blocks.json").write_text(json.dumps(payload))
    manifest = read_manifest(str(out))
    assert manifest.is_contiguous and manifest.init == "contiguous" and manifest.block_source_layers(1) == [3, 4, 5]
    routed = RoutedDiTTransformer2DModel.from_pretrained(str(out))
    # block 0 (a DiT's output head is conditioned by source layer 0's embedder, so the truncated source of
    # a block without layer 0 is not the reference)
    timestep = block_midpoints(routed.time_partition)[0]
    inputs = random_inputs("dit", 2, torch.tensor([timestep, timestep]))
    with torch.no_grad():
        assert torch.equal(routed(**inputs).sample, truncated_dit(transformer, [0, 1, 2])(**inputs).sample)
    with pytest.raises(ValueError, match="source_layers must hold one list of layers_per_block"):
        ConversionManifest.from_dict({**payload, "source_layers": [[0, 5]]})


def test_a_block_of_another_init_is_foreign_and_info_shows_the_layers(dit_folder, tmp_path, capsys):
    from hf_diffusionblocks_cli import main

    folder, _ = dit_folder
    assert main(["convert", str(folder), str(tmp_path / "strided"), "--num_blocks", "3", "--init", "strided", "--transformer_only"]) == 0
    assert "init: strided" in capsys.readouterr().out
    contiguous = convert(folder, tmp_path / "contiguous", 3, init="contiguous")
    assert main(["info", str(tmp_path / "strided")]) == 0
    printed = capsys.readouterr().out
    assert "init: strided" in printed and printed.count("0,5") == 3
    shutil.copyfile(contiguous / "block_1.safetensors", tmp_path / "strided" / "block_1.safetensors")
    with pytest.raises(ValueError, match=r"block of another conversion: \['source_layers'\] differ"):
        RoutedDiTTransformer2DModel.from_pretrained(str(tmp_path / "strided"))
    with pytest.raises(ValueError, match=r"init must be one of \['contiguous', 'strided'\], got 'greedy'"):
        convert(folder, tmp_path / "bad", 3, init="greedy")
    assert not (tmp_path / "bad").exists()


def test_a_fine_tuned_strided_block_and_its_lora_save_under_its_source_layer_names(dit_folder, tmp_path):
    from hf_diffusionblocks.pretrained.finetuning import BlockFinetuningModel, NativeObjective, finetuning_loss
    from hf_diffusionblocks.pretrained.lora import LoraSettings

    folder, _ = dit_folder
    out = convert(folder, tmp_path / "strided", 2, init="strided", layers_per_block=[2, 4])
    model = BlockFinetuningModel(str(out), 1)
    optimizer = torch.optim.SGD(model.block_parameters(1), lr=0.1)
    batch = random_inputs("dit", 4, torch.zeros(4))
    finetuning_loss(model, 1, batch["hidden_states"], {"class_labels": batch["class_labels"]},
                    NativeObjective(model.manifest), torch.Generator().manual_seed(0)).backward()
    optimizer.step()
    model.save_block(str(tmp_path / "trained"), 1, training_steps=1)
    saved = load_file(tmp_path / "trained" / "block_1.safetensors")
    assert {".".join(name.split(".")[:2]) for name in saved} == {f"transformer_blocks.{i}" for i in (0, 2, 3, 5)}
    for local, source in enumerate((0, 2, 3, 5)):
        assert torch.equal(saved[f"transformer_blocks.{source}.attn1.to_q.weight"], model.routed.blocks["1"][local].attn1.to_q.weight)
    resumed = BlockFinetuningModel(str(out), 1)
    resumed.load_block_weights(1, saved, "the saved block")
    assert torch.equal(resumed.routed.blocks["1"][3].attn1.to_q.weight, model.routed.blocks["1"][3].attn1.to_q.weight)

    adapted = BlockFinetuningModel(str(out), 1, lora=LoraSettings(rank=2, alpha=4.0))
    adapted.save_block(str(tmp_path / "lora"), 1, training_steps=1)
    names = load_file(tmp_path / "lora" / "block_1.safetensors")
    assert {name.split(".")[1] for name in names} == {"0", "2", "3", "5"} and all("lora_" in name for name in names)


def test_strided_is_the_default_of_the_api_and_the_command(dit_folder, tmp_path, capsys):
    from hf_diffusionblocks_cli import main

    folder, _ = dit_folder
    assert read_manifest(str(convert(folder, tmp_path / "api", 3))).init == "strided"
    assert main(["convert", str(folder), str(tmp_path / "cli"), "--num_blocks", "3", "--transformer_only"]) == 0
    assert "init: strided" in capsys.readouterr().out
    assert read_manifest(str(tmp_path / "cli")).block_source_layers(1) == [0, 5]
