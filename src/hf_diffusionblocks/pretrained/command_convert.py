"""`hf-diffusionblocks convert SRC OUT --num_blocks B`: the command-line face of `conversion.py`.

    hf-diffusionblocks convert SRC OUT --num_blocks B [--partition equiprobable|uniform] [--overlap γ]
        [--subfolder transformer] [--layers_per_block 10 9 9] [--init contiguous|strided]
        [--logit_mean 0 --logit_std 1] [--transformer_only] [--push_to_hub --hub_model_id ID]

Prints the partition on the model's time axis and, for a pipeline folder, how many of the
pipeline's default sampling steps each block runs. A pipeline source gives a pipeline folder OUT that
`DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True)` loads with the routed transformer
(`converted_pipeline.py`; the converted folder is its `transformer/`, and both carry the card); a
transformer source, or `--transformer_only`, gives the converted transformer folder alone.
"""

from __future__ import annotations

import argparse
import os

from ..atomic_io import read_json_file
from ..hub import push_folder_to_hub
from .conversion import convert_pretrained_transformer
from .converted_pipeline import convert_pipeline
from .converted_folder import ConversionManifest
from ..model_card import write_converted_model_card
from .time_axis import default_num_inference_steps, sampling_steps_per_block


def describe_conversion(manifest: ConversionManifest, pipeline_dir: str | None) -> str:
    """The partition table, and the default sampling steps per block when the pipeline is known."""
    lines = [f"source: {manifest.source_class}  layers: {manifest.source_num_layers}  "
             f"layers_per_block: {manifest.layers_per_block}  init: {manifest.init}", manifest.partition_table()]
    steps = default_steps_per_block(manifest, pipeline_dir)
    if steps is not None:
        pipeline_name, count, per_block = steps
        lines.append(f"{pipeline_name} default sampling ({count} steps, {manifest.scheduler_config.get('_class_name')}): "
                     f"steps per block {per_block}")
    return "\n".join(lines)


def default_steps_per_block(manifest: ConversionManifest, pipeline_dir: str | None) -> tuple[str, int, list[int]] | None:
    """(pipeline class, its default num_inference_steps, steps per block), or None outside a pipeline folder."""
    import diffusers

    if pipeline_dir is None or not os.path.isfile(os.path.join(pipeline_dir, "model_index.json")):
        return None
    index_path = os.path.join(pipeline_dir, "model_index.json")
    model_index = read_json_file(index_path)
    if not isinstance(model_index, dict):
        raise ValueError(f"{index_path} holds JSON but not an object of pipeline components.")
    pipeline_name = model_index.get("_class_name", "")
    if not isinstance(pipeline_name, str):  # a pipeline of remote code ([module, class]): not one of diffusers'
        return None
    scheduler_name = manifest.scheduler_config.get("_class_name", "")
    pipeline_class, scheduler_class = getattr(diffusers, pipeline_name, None), getattr(diffusers, scheduler_name, None)
    if pipeline_class is None or scheduler_class is None:
        return None
    count = default_num_inference_steps(pipeline_class)
    scheduler = scheduler_class.from_config(manifest.scheduler_config)
    return pipeline_name, count, sampling_steps_per_block(manifest.time_partition, scheduler, count, pipeline_name)


def command_convert(args: argparse.Namespace) -> int:
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (the repo to upload to).")
    if args.hub_model_id and not args.push_to_hub:
        raise ValueError("--hub_model_id names where --push_to_hub uploads; pass --push_to_hub too.")
    pipeline_source = os.path.isfile(os.path.join(args.source, "model_index.json"))
    as_pipeline = pipeline_source and not args.transformer_only
    convert = convert_pipeline if as_pipeline else convert_pretrained_transformer
    manifest = convert(
        args.source, args.output_dir, args.num_blocks, subfolder=args.subfolder, partition=args.partition,
        overlap=args.overlap, layers_per_block=args.layers_per_block, init=args.init, logit_mean=args.logit_mean, logit_std=args.logit_std,
    )
    description = describe_conversion(manifest, args.source if pipeline_source else None)
    print(description)
    steps = [line for line in description.splitlines() if "default sampling" in line]
    converted_dir = os.path.join(args.output_dir, args.subfolder or "transformer") if as_pipeline else args.output_dir
    write_converted_model_card(converted_dir, steps_line=steps[0] if steps else None,
                               pipeline_dir=args.output_dir if as_pipeline else None)
    print(f"written: {converted_dir} (stems.safetensors, block_0..{manifest.num_blocks - 1}.safetensors, diffusion_blocks.json, README.md)")
    if as_pipeline:
        print(f"pipeline: {args.output_dir} (DiffusionPipeline.from_pretrained(..., trust_remote_code=True) loads it routed)")
    if args.push_to_hub:
        commits = push_folder_to_hub(args.output_dir, args.hub_model_id, subfolder=args.subfolder or "transformer", token=args.hub_token)
        print(f"pushed: {args.hub_model_id} (shared files, then {len(commits) - 1} block commits)")
    return 0
