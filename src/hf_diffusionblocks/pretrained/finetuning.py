"""Fine-tuning one block of a converted pretrained transformer, through the library's `BlockTrainer`.

`BlockFinetuningModel` is what the trainer sees: the routed model with the stems and block b only
(the other blocks' tensors are never read), stems frozen, and as trainable parameters either all of
block b's layers (full fine-tuning) or a LoRA on them. It is a `training.block_model.BlockTrainableModel`
(`block_parameters`, `save_block`, `check_block_file`, `load_block_weights` of a saved block), so
resuming, per-step seeding, checkpoints and block-parallel launches are the trainer's. Its training
task is `training.pretrained_task.PretrainedFinetuningTask`.

The objective is the model's own (`NativeObjective`), read from the conversion's scheduler config:
block b draws timesteps from its training interval on the model's time axis, noises with the
model's forward process and regresses ε, v or the flow velocity. `--objective distill` regresses
the original model's prediction at the same (x_t, t) instead (`SourceTeacher`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.block_checkpoint import block_weights_name, save_block_file
from .conversion import locate_transformer, source_weight_files
from .converted_folder import MANIFEST_NAME, STEMS_NAME, ConversionManifest, check_block_file, load_stems, load_tensors, read_manifest
from .lora import LoraSettings, adapter_identity, block_lora_state_dict, check_adapter_file, inject_block_lora, load_block_lora_state, save_block_lora
from .modeling_routed import routed_class_for, routed_layer_name

OBJECTIVES = ("native", "distill")
LORA_FOLDER = "lora"


class NativeObjective:
    """Noising and regression target of the model's training objective, from its scheduler config.

    DDPM-family schedulers: `x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε` and target ε (`epsilon`), v (`v_prediction`)
    or x₀ (`sample`). Flow matching: `x_t = (1 − s) x₀ + s ε` with `s = t / T`, target `ε − x₀`.
    """

    def __init__(self, manifest: ConversionManifest):
        from diffusers import DDPMScheduler

        self.time_axis = manifest.time_partition.time_axis
        self.num_train_timesteps = manifest.time_partition.num_train_timesteps
        config = {k: v for k, v in manifest.scheduler_config.items() if not k.startswith("_")}
        if self.time_axis == "ddpm":
            self.scheduler = DDPMScheduler.from_config(config)
            self.prediction_type = self.scheduler.config.prediction_type
            if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
                raise ValueError(f"scheduler prediction_type {self.prediction_type!r} is not supported (epsilon, v_prediction, sample).")
        else:
            self.scheduler, self.prediction_type = None, "flow_velocity"

    def noise(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, target) for clean samples, their noise and the model's timesteps."""
        if self.time_axis == "flow":
            s = (timesteps.float() / self.num_train_timesteps).view(-1, *[1] * (clean.ndim - 1)).to(clean)
            return (1 - s) * clean + s * noise, noise - clean
        timesteps = timesteps.to(clean.device)
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        if self.prediction_type == "epsilon":
            return noisy, noise
        if self.prediction_type == "v_prediction":
            return noisy, self.scheduler.get_velocity(clean, noise, timesteps)
        return noisy, clean


def prediction_channels(model, output: torch.Tensor) -> torch.Tensor:
    """The predicted channels (DiT/PixArt with a learned variance output 2C channels; the first C are the prediction).

    Only models configured with `out_channels = 2 · in_channels` learn a variance (Flux's outputs are
    `(batch, tokens, channels)`, whose dimension 1 is not channels)."""
    in_channels = model.config.in_channels
    learns_variance = getattr(model.config, "out_channels", None) == 2 * in_channels
    return output[:, :in_channels] if learns_variance and output.shape[1] == 2 * in_channels else output


@dataclass
class FinetuningIdentity:
    """What a saved block (or adapter) of this run must carry: the conversion, and the LoRA settings if any."""

    manifest: ConversionManifest
    lora: LoraSettings | None = None

    def expected(self) -> dict[str, Any]:
        return self.manifest.identity() if self.lora is None else adapter_identity(self.manifest, self.lora)


class BlockFinetuningModel(nn.Module):
    """Block b of a converted model, ready for `BlockTrainer` (see the module docstring).

    Args:
        converted_dir (`str`): the converted folder (or Hub repo) to read the stems and block b from.
        block_index (`int`): the block to fine-tune.
        lora (`LoraSettings`, *optional*): train a LoRA on the block instead of all its weights.
        train_stems (`bool`, defaults to False): also train the stems (their optimizer state then costs
            as much as theirs; they are shared, so blocks trained this way no longer fit one folder).
        gradient_checkpointing (`bool`, defaults to False): recompute each layer's activations in the backward
            pass instead of keeping them (diffusers' `enable_gradient_checkpointing`: same gradients, less
            activation memory, one more forward per step).
    """

    def __init__(self, converted_dir: str, block_index: int, lora: LoraSettings | None = None, train_stems: bool = False,
                 gradient_checkpointing: bool = False):
        super().__init__()
        manifest = read_manifest(converted_dir)
        self.routed = routed_class_for(manifest).from_pretrained(converted_dir, block_index=block_index)
        self.block_index = block_index
        self.config = FinetuningIdentity(manifest, lora)
        self.layers_per_block = manifest.layers_per_block
        self.block_training_steps: dict[int, int] = {}
        self.routed.requires_grad_(False)
        block = self.routed.get_block(block_index)
        if lora is None:
            block.requires_grad_(True)
            self.trainable = list(block.parameters())
        else:
            self.trainable = inject_block_lora(block, lora)
        if train_stems:
            stems = list(self.routed.stem_parameters())
            for parameter in stems:
                parameter.requires_grad_(True)
            self.trainable += stems
        if gradient_checkpointing:
            self.routed.enable_gradient_checkpointing()

    @property
    def manifest(self) -> ConversionManifest:
        return self.config.manifest

    def forward(self, *args, **kwargs):
        """Block b on the whole batch: its training timesteps may lie in a neighbour's routing interval (overlap)."""
        return self.routed.forward_block(self.block_index, *args, **kwargs)

    def block_parameters(self, block_index: int):
        self._check(block_index)
        return iter(self.trainable)

    def block_state_dict(self, block_index: int) -> dict[str, torch.Tensor]:
        """What is saved for the block: its layers (source names), or its LoRA tensors."""
        self._check(block_index)
        block = self.routed.get_block(block_index)
        if self.config.lora is None:
            return self.routed.block_state_dict(block_index)
        return block_lora_state_dict(block, block_index, self.manifest)

    def save_block(self, directory: str, block_index: int, training_steps: int | None = None) -> str:
        path = os.path.join(directory, block_weights_name(block_index))
        if self.config.lora is None:
            save_block_file(path, self.block_state_dict(block_index), block_index=block_index, num_blocks=self.manifest.num_blocks,
                            config_dict=self.manifest.identity(), training_steps=training_steps)
        else:
            save_block_lora(path, self.routed.get_block(block_index), block_index, self.manifest, self.config.lora, training_steps)
        return path

    @classmethod
    def check_block_file(cls, path: str, block_index: int, config: FinetuningIdentity) -> None:
        if config.lora is None:
            check_block_file(path, block_index, config.manifest)
        else:
            check_adapter_file(path, block_index, config.manifest, config.lora)

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Load a saved block (source names) or adapter into block b (used on resume)."""
        block = self.routed.get_block(self.block_index)
        if self.config.lora is not None:
            return load_block_lora_state(block, state_dict, self.block_index, self.manifest)
        prefix = f"blocks.{self.block_index}."
        local = {routed_layer_name(name, self.block_index, self.manifest)[len(prefix):]: tensor for name, tensor in state_dict.items()}
        return block.load_state_dict(local, strict=strict)

    def load_block_weights(self, block_index: int, tensors: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """What the trainer calls on resume: a saved block (source names) or adapter into block b; a `ValueError`
        naming `source` when its tensors do not fit."""
        self._check(block_index)
        try:
            self.load_state_dict(tensors, strict=True)
        except (RuntimeError, KeyError) as error:
            raise ValueError(f"block {block_index} ({source}) does not fit this model: {error}") from None

    def _check(self, block_index: int) -> None:
        if block_index != self.block_index:
            raise ValueError(f"this model fine-tunes block {self.block_index}, not block {block_index}.")


class SourceTeacher:
    """The original model in inference mode: the stems and all L source layers, run as one B=1 stack.

    For a contiguous conversion the layers are the converted folder's blocks, concatenated. A conversion
    of another init (`initial_layers.py`) does not hold every source layer, so they are read from the
    source folder the manifest records (`source`; pass `source_dir` when it has moved).

    It is never trained (no gradients, no optimizer state), but it holds all L layers; put it on
    another device or in a lower dtype when memory is short.
    """

    def __init__(
        self, converted_dir: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None, source_dir: str | None = None
    ):
        manifest = read_manifest(converted_dir)
        if manifest.is_contiguous:
            self.model = routed_class_for(manifest).from_pretrained(converted_dir, torch_dtype=dtype, device=device)
            # the source as a one-block conversion: a call runs the full stack whatever the timestep
            layers = nn.ModuleList(layer for b in self.model.loaded_block_indices for layer in self.model.blocks[str(b)])
            self.model.blocks = nn.ModuleDict({"0": layers})
        else:
            self.model = source_stack_model(converted_dir, manifest, source_dir or manifest.source).to(device=device, dtype=dtype)
        self.model.requires_grad_(False)
        self.model.conversion = one_block_manifest(manifest)
        self.model.time_partition = self.model.conversion.time_partition

    @torch.no_grad()
    def __call__(self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        parameter = next(self.model.parameters())
        output = self.model(
            noisy.to(parameter), timestep=self.model.model_timestep(timesteps.to(parameter.device)),
            **{k: v.to(parameter.device) for k, v in conditioning.items()},
        ).sample
        return prediction_channels(self.model, output).to(noisy)


def one_block_manifest(manifest: ConversionManifest) -> ConversionManifest:
    """The source as a one-block contiguous conversion of all its L layers (the teacher's)."""
    return dataclasses.replace(
        manifest, layers_per_block=[manifest.source_num_layers],
        source_layers=None, time_partition=dataclasses.replace(manifest.time_partition, num_blocks=1),
    )


def source_stack_model(converted_dir: str, manifest: ConversionManifest, source: str) -> nn.Module:
    """A routed one-block model of the converted folder's stems and the source folder's L layers."""
    if not source or not os.path.isdir(source):
        raise ValueError(f"source_dir {source!r} is not a folder: the teacher of a {manifest.init!r} conversion reads "
                         "the source's layers from the source folder; pass source_dir (the folder given to convert).")
    model_dir, _ = locate_transformer(source)
    teacher_manifest = one_block_manifest(manifest)
    model = routed_class_for(manifest).build_skeleton(teacher_manifest, [0])
    state = dict(load_stems(converted_dir, manifest))
    stack = manifest.layer_stack
    for path in source_weight_files(model_dir):
        for name, tensor in load_tensors(path).items():
            if stack.index_of(name) is not None:
                state[routed_layer_name(name, 0, teacher_manifest)] = tensor
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def finetuning_loss(
    model: BlockFinetuningModel,
    block_index: int,
    clean: torch.Tensor,
    conditioning: dict[str, torch.Tensor],
    objective: NativeObjective,
    generator: torch.Generator,
    teacher: SourceTeacher | None = None,
) -> torch.Tensor:
    """Mean squared error of block b at timesteps drawn from its training interval (all randomness from `generator`)."""
    partition = model.manifest.time_partition
    timesteps = partition.sample_training_timesteps(block_index, clean.shape[0], generator).to(clean.device)
    noise = torch.randn(clean.shape, generator=generator).to(clean)
    noisy, target = objective.noise(clean, noise, timesteps)
    if teacher is not None:
        target = teacher(noisy, timesteps, conditioning)
    # The model may draw from the global RNG in training mode (DiT/PixArt drop class labels for CFG, as
    # in their pretraining); seeding it from `generator` keeps a step a function of its seed (exact resume).
    devices = [clean.device] if clean.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        torch.manual_seed(seed)
        model_timesteps = model.routed.model_timestep(timesteps)
        prediction = prediction_channels(model.routed, model(noisy, timestep=model_timesteps, **conditioning).sample)
    return F.mse_loss(prediction.float(), target.float())


def prepare_output_folder(converted_dir: str, output_dir: str) -> None:
    """Make `output_dir` a complete converted folder: the root files, and a link (or copy) of every
    original block not already there, so it loads before and after each block is fine-tuned.

    A fine-tuned block is written over its link atomically (rename), which leaves the original intact. Every block
    file of both folders is checked first (from its header: this block of this conversion, metadata unedited), so
    a foreign block is refused by name before training starts instead of being carried into the output.
    """
    manifest = read_manifest(converted_dir)
    os.makedirs(output_dir, exist_ok=True)
    existing = os.path.join(output_dir, MANIFEST_NAME)
    if os.path.isfile(existing) and read_manifest(output_dir).identity() != manifest.identity():
        raise ValueError(f"output_dir {output_dir!r} holds another conversion than {converted_dir!r}.")
    for folder in (converted_dir, output_dir):
        for block_index in range(manifest.num_blocks):
            path = os.path.join(folder, block_weights_name(block_index))
            if os.path.isfile(path):
                check_block_file(path, block_index, manifest)
    names = [MANIFEST_NAME, STEMS_NAME, "config.json", "model.safetensors.index.json"]
    names += [block_weights_name(b) for b in range(manifest.num_blocks)]
    for name in names:
        target = os.path.join(output_dir, name)
        if os.path.exists(target):
            continue
        try:
            os.link(os.path.join(converted_dir, name), target)
        except OSError:  # another filesystem
            shutil.copy2(os.path.join(converted_dir, name), target)
