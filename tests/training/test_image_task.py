"""The image families' training tasks: batches of labelled images, the block losses, their output folders."""

from types import SimpleNamespace

import pytest
import torch

from conftest import randomize_

import hf_diffusionblocks.training.output_folder as output_folder
from hf_diffusionblocks import DiffusionBlocksDiTModel, DiffusionBlocksForImageClassification, DiffusionBlocksViTConfig
from hf_diffusionblocks.training.image_task import (
    DIT_VALIDATION_IMAGES,
    DiTTrainingTask,
    LabelledImageTask,
    ViTTrainingTask,
    first_examples,
)
from hf_diffusionblocks.training.output_folder import HubTarget


def image_set(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return SimpleNamespace(images=torch.rand(count, 1, 8, 8, generator=generator) * 2 - 1,
                           labels=torch.randint(0, 10, (count,), generator=generator))


def tiny_vit_config():
    return DiffusionBlocksViTConfig(image_size=8, patch_size=2, num_channels=1, num_labels=10, hidden_size=32,
                                    num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, num_blocks=3)


def test_a_batch_is_the_images_and_labels_at_the_indices(tmp_path, tiny_dit_config):
    data = image_set(12)
    task = LabelledImageTask(DiffusionBlocksDiTModel, tiny_dit_config, data.images, data.labels, str(tmp_path))
    batch = task.get_batch(torch.tensor([3, 0, 11]), torch.device("cpu"))
    assert torch.equal(batch["pixel_values"], data.images[[3, 0, 11]])
    assert torch.equal(batch["labels"], data.labels[[3, 0, 11]])
    assert task.num_examples == 12
    model = task.build_model([1])
    assert isinstance(model, DiffusionBlocksDiTModel) and model.loaded_block_indices == [1]


def test_images_and_labels_of_different_lengths_are_refused(tmp_path, tiny_dit_config):
    with pytest.raises(ValueError, match="images: 4 images for 3 labels"):
        LabelledImageTask(DiffusionBlocksDiTModel, tiny_dit_config, torch.zeros(4, 1, 8, 8), torch.zeros(3), str(tmp_path))


def test_dit_task_writes_a_pipeline_folder_and_records_the_steps(tmp_path, tiny_dit_config, monkeypatch):
    pushed = []
    monkeypatch.setattr(output_folder, "push_shared_files_and_block", lambda *args, **kwargs: pushed.append((args, kwargs)))
    task = DiTTrainingTask(tiny_dit_config, image_set(16), image_set(20, seed=1), str(tmp_path), HubTarget("org/dit"))
    assert len(task.validation_images) == DIT_VALIDATION_IMAGES
    assert task.model_dir == str(tmp_path / "transformer")
    model = task.build_model([2])
    loss = task.loss(model, 2, task.get_batch(torch.arange(4), torch.device("cpu")), torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    task.save_block(model, 2, 5)
    assert (tmp_path / "model_index.json").is_file() and (tmp_path / "scheduler").is_dir()
    assert task.finished_steps(2) == 5 and task.finished_steps(0) is None
    assert pushed == [((str(tmp_path), "org/dit", 2), {"subfolder": "transformer", "token": None,
                                                        "commit_message": output_folder.DEFAULT_HUB_COMMIT_MESSAGE})]


def test_dit_validation_writes_the_denoising_picture(tmp_path, tiny_dit_config):
    task = DiTTrainingTask(tiny_dit_config, image_set(16), image_set(20, seed=1), str(tmp_path))
    accelerator = SimpleNamespace(device=torch.device("cpu"), trackers=[], is_main_process=True)
    task.log_validation(task.build_model([0]).eval(), 0, 7, accelerator)
    assert (tmp_path / "validation" / "block_0_step_7.png").is_file()


def test_vit_task_trains_on_the_first_images_and_saves_a_model_folder(tmp_path, monkeypatch):
    pushed = []
    monkeypatch.setattr(output_folder, "push_shared_files_and_block", lambda *args, **kwargs: pushed.append(kwargs))
    train = image_set(30)
    task = ViTTrainingTask(tiny_vit_config(), train, image_set(10, seed=1), str(tmp_path), objective="cross_entropy",
                           max_train_samples=12, hub=HubTarget("org/vit", "token"))
    assert task.num_examples == 12 and torch.equal(task.labels, train.labels[:12])
    assert task.model_dir == str(tmp_path)
    model = task.build_model([1])
    assert isinstance(model, DiffusionBlocksForImageClassification)
    loss = task.loss(model, 1, task.get_batch(torch.arange(4), torch.device("cpu")), torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    task.save_block(model, 1, 3)
    assert task.finished_steps(1) == 3 and (tmp_path / "config.json").is_file()
    assert pushed == [{"subfolder": "", "token": "token", "commit_message": "Upload config and index"}]


def test_first_examples_cuts_both_tensors_or_keeps_all():
    data = image_set(5)
    images, labels = first_examples(data, 2)
    assert torch.equal(images, data.images[:2]) and torch.equal(labels, data.labels[:2])
    assert first_examples(data, None)[0] is data.images


def test_vit_validation_loss_is_computed_on_the_validation_images(tmp_path, monkeypatch):
    import hf_diffusionblocks.training.image_task as image_task

    logged = []
    monkeypatch.setattr(image_task, "log_metrics", lambda accelerator, values, step: logged.append(values))
    validation = image_set(10, seed=1)
    task = ViTTrainingTask(tiny_vit_config(), image_set(30), validation, str(tmp_path), objective="cross_entropy")
    model = randomize_(task.build_model([1])).eval()  # a fresh head predicts ln 10 for any image
    task.log_validation(model, 1, 3, SimpleNamespace(device=torch.device("cpu"), trackers=[], is_main_process=True))
    held_out = {"pixel_values": validation.images[:len(task.validation_labels)], "labels": validation.labels[:len(task.validation_labels)]}
    with torch.no_grad():
        expected = float(task.loss(model, 1, held_out, torch.Generator().manual_seed(0)))
        on_training = float(task.loss(model, 1, task.get_batch(torch.arange(len(task.validation_labels)), torch.device("cpu")),
                                      torch.Generator().manual_seed(0)))
    assert logged == [{"validation/loss_block_1": expected}] and expected != on_training
