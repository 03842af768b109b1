"""A converted pipeline folder: the source pipeline with its transformer converted, loadable natively.

    model_index.json                  the source's, with the transformer entry naming the routed class:
                                      "transformer": ["hf_diffusionblocks_classes", "RoutedDiTTransformer2DModel"]
    transformer/                      the converted folder (`converted_folder.py`), plus
      hf_diffusionblocks_classes.py   the library's re-export module (`remote_code.py`)
    scheduler/, vae/, text_encoder/, tokenizer/, ...   the source's other components, copied unchanged

`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` builds the source's pipeline class
(`DiTPipeline`, `FluxPipeline`, ...) with the routed transformer, which diffusers imports from the
component's `hf_diffusionblocks_classes.py` (that file imports the installed library); the caller
never imports the library. The library's own loaders read `transformer/` as any converted folder.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from ..atomic_io import atomic_folder, atomic_write_json, read_json_file
from ..hub_download import path_inside
from ..remote_code import REMOTE_CODE_MODULE, write_remote_code_module
from .conversion import convert_pretrained_transformer
from .converted_folder import ConversionManifest
from .modeling_routed import routed_class_for

MODEL_INDEX_NAME = "model_index.json"


def convert_pipeline(
    source: str, output_dir: str, num_blocks: int, *, subfolder: str | None = None, **options: Any
) -> ConversionManifest:
    """Convert the transformer of the pipeline folder `source` into `output_dir`, a pipeline folder whose
    `model_index.json` names the routed transformer (see the module docstring).

    Args:
        source (`str`): a diffusers pipeline folder (with `model_index.json`).
        output_dir (`str`): the pipeline folder to write (absent or empty); written under a temporary
            name and renamed into place once complete.
        num_blocks (`int`), **options: as `convert_pretrained_transformer`.
        subfolder (`str`, *optional*): the transformer's component (default `"transformer"`).
    Returns:
        The `ConversionManifest` written to `<output_dir>/<subfolder>/diffusion_blocks.json`.
    """
    index_path = os.path.join(str(source), MODEL_INDEX_NAME)
    if not os.path.isfile(index_path):
        raise ValueError(f"source {source!r} has no {MODEL_INDEX_NAME}: writing a pipeline folder needs a pipeline folder as source.")
    model_index = read_model_index(index_path)
    subfolder = subfolder or "transformer"
    path_inside(str(source), subfolder, "subfolder")  # absolute paths and '..' are refused by name
    if not isinstance(model_index.get(subfolder), list):
        raise ValueError(f"{index_path} lists no component {subfolder!r}; pass subfolder= (the transformer's component).")
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise ValueError(f"output_dir {output_dir!r} already exists and is not an empty folder.")
    with atomic_folder(output_dir) as staging:
        for name in other_components(model_index, subfolder):
            component = os.path.join(str(source), name)
            if os.path.isdir(component):
                shutil.copytree(component, os.path.join(staging, name))
        model_dir = os.path.join(staging, subfolder)
        manifest = convert_pretrained_transformer(str(source), model_dir, num_blocks, subfolder=subfolder, **options)
        write_remote_code_module(model_dir)
        model_index[subfolder] = [REMOTE_CODE_MODULE, routed_class_for(manifest).__name__]
        atomic_write_json(os.path.join(staging, MODEL_INDEX_NAME), model_index)
    return manifest


def read_model_index(path: str) -> dict[str, Any]:
    """A pipeline's `model_index.json`: a JSON object of components (a `ValueError` naming the file otherwise)."""
    model_index = read_json_file(path)
    if not isinstance(model_index, dict):
        raise ValueError(f"{path} holds JSON but not an object of pipeline components.")
    return model_index


def converted_model_dir(folder: str, subfolder: str = "transformer") -> tuple[str, str]:
    """(the converted transformer folder, its subfolder): `folder/subfolder` and `subfolder` for a converted
    pipeline folder (one with `model_index.json`), else `folder` itself and `""`."""
    if os.path.isfile(os.path.join(str(folder), MODEL_INDEX_NAME)):
        return os.path.join(str(folder), subfolder), subfolder
    return str(folder), ""


def copy_pipeline_components(pipeline_dir: str, output_dir: str, subfolder: str = "transformer") -> None:
    """Make `output_dir` the converted pipeline `pipeline_dir` around a transformer written elsewhere: its
    `model_index.json` and other components (those not yet there, copied unchanged) and the re-export module in
    `output_dir/subfolder`, so `DiffusionPipeline.from_pretrained(output_dir, trust_remote_code=True)` loads it."""
    model_index = read_model_index(os.path.join(pipeline_dir, MODEL_INDEX_NAME))
    os.makedirs(os.path.join(output_dir, subfolder), exist_ok=True)
    for name in other_components(model_index, subfolder):
        component, target = os.path.join(pipeline_dir, name), os.path.join(output_dir, name)
        if os.path.isdir(component) and not os.path.exists(target):
            with atomic_folder(target) as staging:
                shutil.copytree(component, staging, dirs_exist_ok=True)
    write_remote_code_module(os.path.join(output_dir, subfolder))
    atomic_write_json(os.path.join(output_dir, MODEL_INDEX_NAME), model_index)


def other_components(model_index: dict[str, Any], subfolder: str) -> list[str]:
    """The components `model_index` lists besides the transformer (those saved as `[null, null]` have no folder)."""
    return [
        name for name, entry in model_index.items()
        if not name.startswith("_") and name != subfolder and isinstance(entry, list) and entry and entry[0] is not None
    ]
