"""A converted pipeline folder samples through `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`
in a fresh process that never imports the library, with the routed model's images."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_diffusionblocks.pretrained.converted_pipeline import convert_pipeline
from hf_diffusionblocks.pretrained.modeling_routed import RoutedDiTTransformer2DModel, RoutedFluxTransformer2DModel
from hf_diffusionblocks.remote_code import REMOTE_CODE_FILE, REMOTE_CODE_MODULE
from script_testing import load_script
from tiny_models import pipeline_call_arguments, save_pipeline_folder, tiny_pipeline

ROUTED = {"dit": RoutedDiTTransformer2DModel, "flux": RoutedFluxTransformer2DModel}
# the tiny Flux pipeline has no text encoders: diffusers wants the absent components named
ABSENT = {"dit": [], "flux": ["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"]}

FRESH_PROCESS = r'''
import json, sys
import torch
from safetensors.torch import load_file, save_file
from diffusers import DiffusionPipeline

torch.set_num_threads(1)  # as the test process (conftest.py): the same kernels, the same bits
folder, arguments_dir, absent = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
assert not any(name.startswith("hf_diffusionblocks") for name in sys.modules)
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True, **{name: None for name in absent})
arguments = {**json.load(open(arguments_dir + "/scalars.json")), **load_file(arguments_dir + "/tensors.safetensors")}
images = pipe(**arguments, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np").images
save_file({"images": torch.from_numpy(images)}, arguments_dir + "/images.safetensors")
print(json.dumps({"pipeline": type(pipe).__name__, "transformer": type(pipe.transformer).__name__,
                  "blocks": pipe.transformer.loaded_block_indices}))
'''


@pytest.mark.parametrize("kind", ["dit", "flux"])
def test_a_converted_pipeline_loads_natively_in_a_fresh_process(kind, tmp_path):
    source = save_pipeline_folder(kind, tmp_path / "source")
    out = tmp_path / "converted"
    convert_pipeline(str(source), str(out), 2)
    index = json.loads((out / "model_index.json").read_text())
    assert index["transformer"] == [REMOTE_CODE_MODULE, ROUTED[kind].__name__]
    assert (out / "transformer" / REMOTE_CODE_FILE).is_file() and (out / "scheduler" / "scheduler_config.json").is_file()

    arguments = pipeline_call_arguments(kind)
    pipe = tiny_pipeline(kind, ROUTED[kind].from_pretrained(str(out / "transformer")))
    expected = pipe(**arguments, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np").images

    (tmp_path / "arguments").mkdir()
    save_file({k: v for k, v in arguments.items() if isinstance(v, torch.Tensor)}, tmp_path / "arguments" / "tensors.safetensors")
    (tmp_path / "arguments" / "scalars.json").write_text(json.dumps({k: v for k, v in arguments.items() if not isinstance(v, torch.Tensor)}))
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out), str(tmp_path / "arguments"), json.dumps(ABSENT[kind])],
                            capture_output=True, text=True, timeout=600, env=environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"pipeline": type(pipe).__name__, "transformer": ROUTED[kind].__name__, "blocks": [0, 1]}
    images = load_file(tmp_path / "arguments" / "images.safetensors")["images"]
    assert torch.equal(images, torch.from_numpy(expected))


def test_bad_pipeline_conversions_are_named(tmp_path):
    source = save_pipeline_folder("dit", tmp_path / "source")
    with pytest.raises(ValueError, match="has no model_index.json"):
        convert_pipeline(str(source / "transformer"), str(tmp_path / "a"), 2)
    with pytest.raises(ValueError, match="lists no component 'unet'"):
        convert_pipeline(str(source), str(tmp_path / "b"), 2, subfolder="unet")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        convert_pipeline(str(source), str(tmp_path / "full"), 2)
    with pytest.raises(ValueError, match=r"num_blocks must be an integer in \[1, 4\]"):
        convert_pipeline(str(source), str(tmp_path / "c"), 9)
    assert not (tmp_path / "c").exists()  # nothing is left behind


def test_convert_command_writes_a_pipeline_folder_for_a_pipeline_source(tmp_path, capsys):
    from hf_diffusionblocks_cli import main

    source = save_pipeline_folder("dit", tmp_path / "source")
    assert main(["convert", str(source), str(tmp_path / "out"), "--num_blocks", "2"]) == 0
    printed = capsys.readouterr().out
    assert "trust_remote_code=True" in printed and "steps per block" in printed
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index["transformer"] == [REMOTE_CODE_MODULE, "RoutedDiTTransformer2DModel"] and index["_class_name"] == "DiTPipeline"
    for card in (tmp_path / "out" / "README.md", tmp_path / "out" / "transformer" / "README.md"):  # the Hub shows the root's
        text = card.read_text()
        assert 'DiffusionPipeline.from_pretrained("<this folder or repo>", trust_remote_code=True)' in text
        assert "steps per block" in text and "converted (unchanged)" in text
    assert RoutedDiTTransformer2DModel.from_pretrained(str(tmp_path / "out"), subfolder="transformer").loaded_block_indices == [0, 1]
    # --transformer_only, or a transformer source: the converted transformer folder alone
    for given, name in ((source, "only"), (source / "transformer", "from_transformer")):
        flags = ["--transformer_only"] if name == "only" else []
        assert main(["convert", str(given), str(tmp_path / name), "--num_blocks", "2", *flags]) == 0
        assert not (tmp_path / name / "model_index.json").exists() and (tmp_path / name / "block_1.safetensors").is_file()
        assert "RoutedDiTTransformer2DModel.from_pretrained" in (tmp_path / name / "README.md").read_text()


def test_every_routed_class_is_re_exported_for_remote_code():
    import hf_diffusionblocks
    from hf_diffusionblocks.pretrained.modeling_routed import ROUTED_CLASSES

    for routed in ROUTED_CLASSES.values():
        assert routed.__name__ in hf_diffusionblocks.__all__ and getattr(hf_diffusionblocks, routed.__name__) is routed


FINE_TUNED_PROCESS = r'''
import json, sys
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
assert not any(name == "hf_diffusionblocks_cli" for name in sys.modules)
images = pipe(class_labels=[1, 2], num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np").images
print(json.dumps({"pipeline": type(pipe).__name__, "steps": {str(k): v for k, v in pipe.transformer.block_training_steps.items()},
                  "shape": list(images.shape), "finite": bool(torch.isfinite(torch.from_numpy(images)).all())}))
'''


def test_fine_tuning_a_converted_pipeline_folder_gives_a_pipeline_folder(tmp_path):
    source = save_pipeline_folder("dit", tmp_path / "source")
    convert_pipeline(str(source), str(tmp_path / "converted"), 2)
    latents = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    save_file({"latents": latents, "class_labels": torch.arange(16) % 10}, tmp_path / "latents.safetensors")
    script = load_script("finetune_pretrained")
    common = ["--converted_dir", str(tmp_path / "converted"), "--latents_file", str(tmp_path / "latents.safetensors"),
              "--train_batch_size", "4", "--max_train_steps", "4", "--report_to", "none"]
    script.main([*common, "--output_dir", str(tmp_path / "ft"), "--block_index", "1"])

    ft = tmp_path / "ft"
    assert json.loads((ft / "model_index.json").read_text())["transformer"] == [REMOTE_CODE_MODULE, "RoutedDiTTransformer2DModel"]
    assert (ft / "vae" / "config.json").is_file() and (ft / "transformer" / REMOTE_CODE_FILE).is_file()
    tuned, original = (load_file(folder / "transformer" / "block_1.safetensors") for folder in (ft, tmp_path / "converted"))
    assert any(not torch.equal(tuned[name], original[name]) for name in original)
    for card in (ft / "README.md", ft / "transformer" / "README.md"):
        assert "| 1 | 0,3 | [0.0, 500.0) | fine-tuned (4 steps) | - |" in card.read_text()  # strided, the default

    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", FINE_TUNED_PROCESS, str(ft)], capture_output=True, text=True,
                            timeout=600, env=environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"pipeline": "DiTPipeline", "steps": {"1": 4},
                                                                   "shape": [2, 8, 8, 3], "finite": True}
    with pytest.raises(ValueError, match="--use_lora: --converted_dir .* is a pipeline folder"):
        script.main([*common, "--output_dir", str(tmp_path / "lora"), "--use_lora"])
    assert not (tmp_path / "lora").exists()
