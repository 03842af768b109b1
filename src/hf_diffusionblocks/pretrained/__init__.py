"""Pretrained diffusers transformers, block by block.

- `time_axis`: B-block partitions on the model's own time axis (DDPM timesteps, SD3/Flux flow time);
- `layer_stack`: the layer lists blocks slice, numbered as one stack (Flux: double- then single-stream);
- `conversion`: split a DiT / PixArt / SD3 / Flux transformer folder into stems + per-block files;
- `converted_folder`: the on-disk layout, reading only the tensors one needs;
- `converted_pipeline`: a pipeline folder with the converted transformer, loadable with `trust_remote_code=True`;
- `modeling_routed`: `Routed<Source>` transformers that run one block per call in diffusers' pipelines;
- `finetuning`, `lora`: fine-tune one block (full or LoRA) with the model's own objective or by distillation;
- `model_card`: README.md of a converted folder.
"""

from .conversion import CLASS_MAPPINGS, convert_pretrained_transformer
from .converted_pipeline import convert_pipeline
from .finetuning import BlockFinetuningModel, NativeObjective, SourceTeacher, finetuning_loss
from .lora import LoraSettings
from .modeling_routed import (
    RoutedDiTTransformer2DModel,
    RoutedFluxTransformer2DModel,
    RoutedPixArtTransformer2DModel,
    RoutedSD3Transformer2DModel,
    load_routed_transformer,
)
from .time_axis import TimeAxisPartition, default_num_inference_steps, sampling_steps_per_block, time_partition_from_scheduler_config

__all__ = [
    "CLASS_MAPPINGS",
    "BlockFinetuningModel",
    "LoraSettings",
    "NativeObjective",
    "RoutedDiTTransformer2DModel",
    "RoutedFluxTransformer2DModel",
    "RoutedPixArtTransformer2DModel",
    "RoutedSD3Transformer2DModel",
    "SourceTeacher",
    "TimeAxisPartition",
    "convert_pipeline",
    "convert_pretrained_transformer",
    "default_num_inference_steps",
    "finetuning_loss",
    "load_routed_transformer",
    "sampling_steps_per_block",
    "time_partition_from_scheduler_config",
]
