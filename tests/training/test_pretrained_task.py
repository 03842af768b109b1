"""The fine-tuning task of a converted pretrained model: its data, its output folder (full or LoRA), its refusals."""

import pytest
import torch
from safetensors.torch import save_file

import hf_diffusionblocks.training.output_folder as output_folder
from hf_diffusionblocks.pretrained.converted_folder import read_manifest
from hf_diffusionblocks.pretrained.finetuning import BlockFinetuningModel, prepare_output_folder
from hf_diffusionblocks.pretrained.lora import LoraSettings
from hf_diffusionblocks.training.output_folder import HubTarget
from hf_diffusionblocks.training.pretrained_task import PretrainedFinetuningTask, load_finetuning_data
from converted_fixture import converted_dit  # noqa: F401  (the fixture)


def test_latents_file_gives_the_samples_and_the_conditioning(converted_dit, tmp_path):
    path = tmp_path / "latents.safetensors"
    save_file({"latents": torch.ones(3, 1, 8, 8, dtype=torch.float16), "class_labels": torch.tensor([1, 2, 3])}, str(path))
    clean, conditioning = load_finetuning_data(read_manifest(str(converted_dit)), latents_file=str(path))
    assert clean.dtype == torch.float32 and clean.shape == (3, 1, 8, 8)
    assert list(conditioning) == ["class_labels"]


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"class_labels": torch.zeros(3)}, "has no `latents` tensor"),
        ({"latents": torch.zeros(3, 4, 8, 8)}, r"in_channels=1"),
        ({"latents": torch.zeros(3, 1, 8, 8), "class_labels": torch.zeros(2)}, r"\['class_labels'\] do not have 3 rows"),
    ],
)
def test_bad_latents_files_are_named(converted_dit, tmp_path, tensors, message):
    path = tmp_path / "latents.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=message):
        load_finetuning_data(read_manifest(str(converted_dit)), latents_file=str(path))


def make_task(converted, output_dir, **options):
    prepare_output_folder(str(converted), str(output_dir))
    generator = torch.Generator().manual_seed(0)
    clean, labels = torch.randn(6, 1, 8, 8, generator=generator), torch.randint(0, 10, (6,), generator=generator)
    return PretrainedFinetuningTask(read_manifest(str(converted)), str(converted), str(output_dir), clean,
                                    {"class_labels": labels}, **options)


def test_full_finetuning_replaces_the_block_in_the_converted_folder(converted_dit, tmp_path, monkeypatch):
    pushed = []
    monkeypatch.setattr(output_folder, "push_shared_files_and_block", lambda *args, **kwargs: pushed.append(kwargs))
    task = make_task(converted_dit, tmp_path / "out", hub=HubTarget("org/ft"))
    assert task.config is None and task.model_dir == str(tmp_path / "out") and task.num_examples == 6
    batch = task.get_batch(torch.tensor([0, 5]), torch.device("cpu"))
    assert sorted(batch) == ["class_labels", "clean"] and batch["clean"].shape == (2, 1, 8, 8)
    model = task.build_model([1])
    assert isinstance(model, BlockFinetuningModel) and model.block_index == 1
    loss = task.loss(model, 1, batch, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and task.teacher is None
    assert task.finished_steps(1) is None                 # the converted original carries no training steps
    task.save_block(model, 1, 4)
    assert task.finished_steps(1) == 4 and task.finished_steps(0) is None
    assert pushed == [{"subfolder": "", "token": None, "commit_message": output_folder.DEFAULT_HUB_COMMIT_MESSAGE}]


def test_lora_saves_the_adapter_in_its_own_folder_and_distill_builds_a_teacher(converted_dit, tmp_path):
    task = make_task(converted_dit, tmp_path / "out", objective="distill", lora=LoraSettings(rank=2))
    assert task.model_dir == str(tmp_path / "out" / "lora")
    model = task.build_model([0])
    task.loss(model, 0, task.get_batch(torch.arange(2), torch.device("cpu")), torch.Generator().manual_seed(0))
    assert task.teacher is not None
    task.save_block(model, 0, 2)
    assert (tmp_path / "out" / "lora" / "block_0.safetensors").is_file() and task.finished_steps(0) == 2


def test_an_unknown_objective_is_refused(converted_dit, tmp_path):
    with pytest.raises(ValueError, match="objective must be one of"):
        make_task(converted_dit, tmp_path / "out", objective="score")


def test_a_model_is_built_for_one_block_only(converted_dit, tmp_path):
    with pytest.raises(ValueError, match="block_indices: .* one block at a time, got \\[0, 1\\]"):
        make_task(converted_dit, tmp_path / "out").build_model([0, 1])



@pytest.mark.parametrize("lora", [None, LoraSettings(rank=2, alpha=2.0)], ids=["full", "lora"])
def test_gradient_checkpointing_is_on_in_the_built_block_and_gives_the_same_gradients(converted_dit, tmp_path, lora):
    gradients = []
    for checkpointing in (False, True):
        task = make_task(converted_dit, tmp_path / f"out_{checkpointing}", lora=lora, gradient_checkpointing=checkpointing)
        torch.manual_seed(0)  # peft draws the adapters' initial A from the global generator
        model = task.build_model([0])
        with torch.no_grad():  # diffusers zero-initialises the AdaLN gates, which would hide the attention's adapters
            generator = torch.Generator().manual_seed(1)
            for name, parameter in model.routed.blocks["0"].named_parameters():
                if "lora_" not in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
        assert model.routed.gradient_checkpointing is checkpointing
        calls = []
        if checkpointing:  # every layer of the block goes through diffusers' checkpointing function
            wrapped = model.routed._gradient_checkpointing_func
            model.routed._gradient_checkpointing_func = lambda *args, **kwargs: calls.append(1) or wrapped(*args, **kwargs)
        model.train()
        batch = task.get_batch(torch.arange(4), torch.device("cpu"))
        task.loss(model, 0, batch, torch.Generator().manual_seed(0)).backward()
        assert len(calls) == (len(model.routed.blocks["0"]) if checkpointing else 0)
        gradients.append([p.grad.clone() for p in model.block_parameters(0)])
    assert len(gradients[0]) == len(gradients[1]) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*gradients))
    assert all(g.abs().sum() > 0 for g in gradients[1] if lora is None) and any(g.abs().sum() > 0 for g in gradients[1])
