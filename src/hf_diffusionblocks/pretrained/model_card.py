"""README.md of a converted folder: source, partition, what each block is, how to load it.

Written by `hf-diffusionblocks convert` and rewritten by `examples/finetune_pretrained.py` after
each run, from what the folder holds: every block file's metadata says whether it is the converted
original (its digest equals the conversion's) or fine-tuned (and for how many steps), and
`lora/block_<b>.safetensors` files are listed with their rank.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..atomic_io import atomic_write
from ..modeling.block_checkpoint import block_weights_name, read_block_metadata, tensors_digest
from .converted_folder import ConversionManifest, load_tensors, read_manifest
from .lora import read_lora_settings

README_NAME = "README.md"


def block_rows(folder: str, manifest: ConversionManifest, lora_folder: str = "lora") -> list[str]:
    rows = ["| block | layers | timesteps | weights | LoRA |", "|---:|---|---|---|---|"]
    for b in range(manifest.num_blocks):
        layers = manifest.layer_range(b)
        low, high = manifest.time_partition.block_interval(b)
        path = os.path.join(folder, block_weights_name(b))
        if not os.path.isfile(path):
            weights = "missing"
        elif tensors_digest(load_tensors(path)) == manifest.block_sha256[b]:
            weights = "converted (unchanged)"
        else:
            steps = read_block_metadata(path)["training_steps"]
            weights = f"fine-tuned ({steps} steps)" if steps is not None else "changed"
        adapter = os.path.join(folder, lora_folder, block_weights_name(b))
        if os.path.isfile(adapter):
            settings, steps = read_lora_settings(adapter), read_block_metadata(adapter)["training_steps"]
            lora = f"rank {settings.rank}, {steps} steps"
        else:
            lora = "-"
        rows.append(f"| {b} | {layers.start}-{layers.stop - 1} | [{low:.1f}, {high:.1f}) | {weights} | {lora} |")
    return rows


def render_model_card(folder: str, figures: dict[str, Any] | None = None, steps_line: str | None = None) -> str:
    manifest = read_manifest(folder)
    routed = f"Routed{manifest.source_class}"
    pipeline = {"DiTTransformer2DModel": "DiTPipeline", "PixArtTransformer2DModel": "PixArtSigmaPipeline",
                "SD3Transformer2DModel": "StableDiffusion3Pipeline"}[manifest.source_class]
    has_lora = os.path.isdir(os.path.join(folder, "lora"))
    lines = [
        "---",
        "library_name: diffusers",
        "tags:",
        "- diffusion-blocks",
        f"- {manifest.source_class}",
        "---",
        "",
        f"# {manifest.source_class} in {manifest.num_blocks} blocks (DiffusionBlocks conversion)",
        "",
        f"Source: `{manifest.source or 'unknown'}`, {sum(manifest.layers_per_block)} layers of `{manifest.layer_list}`, "
        f"split into {manifest.num_blocks} blocks of {manifest.layers_per_block} layers. The stems "
        "(patch and conditioning embeddings, final norm and projection) are shared and frozen; each block "
        "is its own `block_<b>.safetensors` and runs alone for the timesteps of its interval, so one "
        f"sampling step costs {manifest.layers_per_block} layers instead of {sum(manifest.layers_per_block)}.",
        "",
        "## Partition of the model's time axis",
        "",
        "```",
        manifest.time_partition.table(manifest.layers_per_block),
        *([steps_line] if steps_line else []),
        "```",
        "",
        "## Blocks",
        "",
        *block_rows(folder, manifest),
        "",
        "## Use it in the native pipeline",
        "",
        "```python",
        f"from diffusers import {pipeline}",
        f"from hf_diffusionblocks.pretrained.modeling_routed import {routed}",
        "",
        f"transformer = {routed}.from_pretrained(\"<this folder or repo>\"" + (", lora_dir=\"<this folder>/lora\")" if has_lora else ")"),
        f"pipe = {pipeline}.from_pretrained(\"<the source pipeline>\", transformer=transformer)",
        "```",
        "",
        "Load one block alone with `block_index=b` (fine-tuning, or serving one interval per machine).",
    ]
    if figures:
        lines += ["", "## Measured", "", "```json", json.dumps(figures, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def write_model_card(folder: str, figures: dict[str, Any] | None = None, steps_line: str | None = None) -> str:
    path = os.path.join(folder, README_NAME)
    text = render_model_card(folder, figures, steps_line)

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)

    atomic_write(path, write)
    return path
