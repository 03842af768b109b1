"""`hf-diffusionblocks encode`, the local DiT pipeline of examples/make_tiny_dit_pipeline.py, and what `convert`
says about folders it cannot convert."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DiTPipeline
from safetensors.torch import load_file
from tiny_models import save_pipeline_folder

from hf_diffusionblocks_cli import main as cli_main
from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.pretrained.latent_encoding import encode_image_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_encode_writes_the_vae_latents_and_labels_of_the_dataset(tmp_path, capsys):
    pipeline_dir = save_pipeline_folder("dit", tmp_path / "dit-pipeline")
    output = tmp_path / "latents.safetensors"
    assert cli_main(["encode", str(pipeline_dir), str(output), "--max_samples", "5", "--batch_size", "2"]) == 0
    assert "latents [5, 4, 8, 8]" in capsys.readouterr().out
    tensors = load_file(output)
    dataset = load_image_dataset("digits", "train")
    vae = AutoencoderKL.from_pretrained(pipeline_dir, subfolder="vae")
    with torch.no_grad():
        expected = vae.encode(dataset.images[:5].expand(-1, 3, -1, -1)).latent_dist.mean * vae.config.scaling_factor
    torch.testing.assert_close(tensors["latents"], expected)
    assert torch.equal(tensors["class_labels"], dataset.labels[:5].long())


def test_encode_refuses_bad_input_before_writing(tmp_path, capsys):
    pipeline_dir = save_pipeline_folder("dit", tmp_path / "dit-pipeline")
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"x")
    cases = [
        ([str(tmp_path / "missing"), str(tmp_path / "a.safetensors")], "does not exist"),
        ([str(pipeline_dir / "vae"), str(tmp_path / "a.safetensors")], "no model_index.json"),
        ([str(pipeline_dir), str(existing)], "already exists"),
        ([str(pipeline_dir), str(tmp_path / "no" / "a.safetensors")], "does not exist"),
        ([str(pipeline_dir), str(tmp_path / "a.safetensors"), "--batch_size", "0"], "batch_size must be >= 1"),
    ]
    for arguments, message in cases:
        assert cli_main(["encode", *arguments]) == 1
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and error.count("\n") == 1, error
    pixart_dir = save_pipeline_folder("pixart", tmp_path / "pixart-pipeline")
    assert cli_main(["encode", str(pixart_dir), str(tmp_path / "a.safetensors")]) == 1
    assert "'PixArtTransformer2DModel'; encode writes class labels" in capsys.readouterr().err
    assert not (tmp_path / "a.safetensors").exists()


def test_convert_says_what_a_folder_it_cannot_convert_is(tmp_path, capsys):
    folder = tmp_path / "blocks"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "diffusion_blocks_dit", "num_blocks": 3}))
    assert cli_main(["convert", str(folder), str(tmp_path / "out"), "--num_blocks", "3"]) == 1
    error = capsys.readouterr().err
    assert "is a DiffusionBlocks model (model_type 'diffusion_blocks_dit'), already split into 3 blocks" in error
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert cli_main(["convert", str(folder), str(tmp_path / "out"), "--num_blocks", "3"]) == 1
    assert "is a transformers model (model_type 'bert')" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_local_dit_pipeline_is_a_complete_diffusers_pipeline(tmp_path):
    spec = importlib.util.spec_from_file_location("make_tiny_dit_pipeline", ROOT / "examples" / "make_tiny_dit_pipeline.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = tmp_path / "dit-pipeline"
    script.main(["--output_dir", str(folder), "--num_layers", "2", "--attention_head_dim", "8", "--max_train_steps", "1",
                 "--train_batch_size", "4"])
    pipeline = DiTPipeline.from_pretrained(folder)
    assert pipeline.transformer.config.num_layers == 2 and pipeline.labels == {str(i): i for i in range(10)}
    images = pipeline(class_labels=[0, 9], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert [image.size for image in images] == [(8, 8), (8, 8)]
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        script.main(["--output_dir", str(folder)])
