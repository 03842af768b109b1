"""Converted folders on the (fake, in-process) Hub: per-block loading downloads one block; fine-tuning pushes each block alone."""

import pytest
import torch
from safetensors.torch import save_file

from hf_diffusionblocks.hub import push_folder_to_hub
from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer
from hf_diffusionblocks.pretrained.modeling_routed import RoutedSD3Transformer2DModel
from script_testing import load_script
from test_finetuning import digits_dit_folder, script_args
from fake_hub import REPO_ID, TOKEN, repo_matches_folder
from tiny_models import random_inputs, save_pipeline_folder


def test_one_block_from_the_hub_downloads_only_the_stems_and_that_block(fake_hub, tmp_path):
    converted = tmp_path / "converted"
    convert_pretrained_transformer(str(save_pipeline_folder("sd3", tmp_path / "sd3")), str(converted), 2)
    push_folder_to_hub(converted, REPO_ID, token=TOKEN)
    fake_hub.requests.clear()
    model = RoutedSD3Transformer2DModel.from_pretrained(REPO_ID, block_index=1, cache_dir=str(tmp_path / "cache"))
    downloaded = {path.split("/resolve/main/")[1] for method, path, _ in fake_hub.requests if method == "GET" and "/resolve/" in path}
    assert downloaded == {"diffusion_blocks.json", "stems.safetensors", "block_1.safetensors"}
    local = RoutedSD3Transformer2DModel.from_pretrained(str(converted), block_index=1)
    inputs = random_inputs("sd3", 2, torch.tensor([10.0, 300.0]))
    with torch.no_grad():
        assert torch.equal(model(**inputs).sample, local(**inputs).sample)


@pytest.mark.parametrize("lora", [False, True])
def test_finetuning_pushes_each_block_as_its_own_commit(fake_hub, tmp_path, monkeypatch, lora):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    converted = digits_dit_folder(tmp_path)
    extra = ["--use_lora", "--lora_rank", "2"] if lora else []
    load_script("finetune_pretrained").main(script_args(converted, tmp_path / "out", "--block_index", "all", "--max_train_steps", "2",
                                                        "--push_to_hub", "--hub_model_id", REPO_ID, "--hub_token", TOKEN, *extra))
    block_commits = [commit.added for commit in fake_hub.repos[REPO_ID] if any("block_" in name for name in commit.added)]
    blocks = [["block_0.safetensors"], ["block_1.safetensors"]]
    # LoRA: the adapters as they are trained, then the base blocks, which the repo needs to load
    assert block_commits == ([["lora/block_0.safetensors"], ["lora/block_1.safetensors"]] + blocks if lora else blocks)
    head = set(fake_hub.head(REPO_ID).files)
    assert {"diffusion_blocks.json", "config.json", "stems.safetensors", "README.md", "block_0.safetensors", "block_1.safetensors"} <= head
    assert not any(name.startswith(("checkpoints/", "logs/")) for name in head)


def test_a_converted_pipeline_and_its_fine_tuning_push_each_block_as_its_own_commit(fake_hub, tmp_path, monkeypatch, capsys):
    from hf_diffusionblocks_cli import main

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    source = save_pipeline_folder("dit", tmp_path / "source")
    assert main(["convert", str(source), str(tmp_path / "converted"), "--num_blocks", "2", "--hub_model_id", REPO_ID]) == 1
    assert "pass --push_to_hub too" in capsys.readouterr().err and not (tmp_path / "converted").exists()
    assert main(["convert", str(source), str(tmp_path / "converted"), "--num_blocks", "2", "--push_to_hub",
                 "--hub_model_id", REPO_ID, "--hub_token", TOKEN]) == 0
    assert "then 2 block commits" in capsys.readouterr().out
    block_commits = [commit.added for commit in fake_hub.repos[REPO_ID] if any("block_" in name for name in commit.added)]
    assert block_commits == [["transformer/block_0.safetensors"], ["transformer/block_1.safetensors"]]
    head = set(fake_hub.head(REPO_ID).files)
    assert {"model_index.json", "README.md", "vae/config.json", "scheduler/scheduler_config.json", "transformer/stems.safetensors",
            "transformer/hf_diffusionblocks_classes.py", "transformer/diffusion_blocks.json"} <= head

    save_file({"latents": torch.randn(8, 4, 8, 8), "class_labels": torch.arange(8)}, tmp_path / "latents.safetensors")
    load_script("finetune_pretrained").main([
        "--converted_dir", str(tmp_path / "converted"), "--output_dir", str(tmp_path / "ft"), "--latents_file",
        str(tmp_path / "latents.safetensors"), "--train_batch_size", "4", "--max_train_steps", "2", "--block_index", "1",
        "--report_to", "none", "--push_to_hub", "--hub_model_id", REPO_ID + "-ft", "--hub_token", TOKEN])
    block_commits = [commit.added for commit in fake_hub.repos[REPO_ID + "-ft"] if any("block_" in name for name in commit.added)]
    # the fine-tuned block when it is done; at the end the block this run did not train, so that the repo loads whole
    assert block_commits == [["transformer/block_1.safetensors"], ["transformer/block_0.safetensors"]]
    head = set(fake_hub.head(REPO_ID + "-ft").files)
    assert {"model_index.json", "README.md", "vae/config.json", "transformer/hf_diffusionblocks_classes.py"} <= head
    repo_matches_folder(fake_hub, REPO_ID + "-ft", tmp_path / "ft")  # every file, bit for bit
    assert not any(name.startswith(("checkpoints/", "logs/")) for name in head)
