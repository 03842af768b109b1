"""Pretrained diffusers transformers, block by block: time-axis partitions, conversion, routing, fine-tuning."""

from .time_axis import TimeAxisPartition, default_num_inference_steps, sampling_steps_per_block, time_partition_from_scheduler_config

__all__ = [
    "TimeAxisPartition",
    "default_num_inference_steps",
    "sampling_steps_per_block",
    "time_partition_from_scheduler_config",
]
