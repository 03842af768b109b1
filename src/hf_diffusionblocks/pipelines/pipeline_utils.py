"""Shared base of the library's diffusers pipelines: saving and loading a pipeline folder.

`DiffusionPipeline.from_pretrained` only resolves diffusers/transformers classes (diffusers 0.42), so
the library's pipelines read `model_index.json` themselves and load each component with its own
class from the component's subfolder. On save, components of this library are recorded under the
library name `hf_diffusionblocks`, and every file reaches the folder by an atomic rename: processes
of a block-parallel launch save into the same folder while others read it.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

from diffusers import DiffusionPipeline

from ..hub_utils import HubOptions, resolve_file
from ..modeling.block_checkpoint import atomic_save_folder, atomic_write_json

MODEL_INDEX_NAME = "model_index.json"
LIBRARY_NAME = "hf_diffusionblocks"
_ALLOWED_LIBRARIES = (LIBRARY_NAME, "diffusers", "transformers")


def _component_class(library: str, class_name: str) -> type:
    if library not in _ALLOWED_LIBRARIES:
        raise ValueError(f"pipeline component class {class_name!r} comes from {library!r}; expected one of {_ALLOWED_LIBRARIES}.")
    component_class = getattr(importlib.import_module(library), class_name, None)
    if component_class is None:
        raise ValueError(f"{library} has no class {class_name!r} (is hf_diffusionblocks up to date?).")
    return component_class


class DiffusionBlocksPipelineBase(DiffusionPipeline):
    """A `DiffusionPipeline` whose folder loads with the library's own classes."""

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers' save into a staging folder inside `save_directory`, `model_index.json` rewritten to
        name this library for its components, then every file renamed into place (atomic per file), so
        a process loading the folder while another saves never reads a half-written file."""
        def save(staging: str) -> None:
            super(DiffusionBlocksPipelineBase, self).save_pretrained(staging, **kwargs)
            index_path = os.path.join(staging, MODEL_INDEX_NAME)
            with open(index_path, encoding="utf-8") as file:
                model_index = json.load(file)
            for name, entry in model_index.items():
                if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
                    continue
                component = getattr(self, name)
                if type(component).__module__.startswith(LIBRARY_NAME + "."):
                    model_index[name] = [LIBRARY_NAME, type(component).__name__]
            atomic_write_json(index_path, model_index)

        atomic_save_folder(save_directory, save, last=(MODEL_INDEX_NAME,))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        subfolder: str = "",
        revision: str | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **components: Any,
    ):
        """Load a pipeline folder or Hub repo (`model_index.json` and one subfolder per component).

        Components given as keyword arguments replace the stored ones.
        """
        options = HubOptions(subfolder, revision, cache_dir, token, local_files_only)
        source = str(pretrained_model_name_or_path)
        index_path = resolve_file(source, MODEL_INDEX_NAME, options)
        if index_path is None:
            raise ValueError(f"no {MODEL_INDEX_NAME} in {source!r}: not a pipeline folder or repo.")
        with open(index_path, encoding="utf-8") as file:
            model_index = json.load(file)
        if model_index.get("_class_name") != cls.__name__:
            raise ValueError(f"{source} holds a {model_index.get('_class_name')!r} pipeline, not a {cls.__name__}.")
        loaded: dict[str, Any] = {}
        for name, entry in model_index.items():
            if name.startswith("_"):
                continue
            if name in components:
                loaded[name] = components.pop(name)
            elif isinstance(entry, list) and len(entry) == 2 and entry[0] is not None:
                loaded[name] = _component_class(*entry).from_pretrained(
                    source,
                    subfolder=f"{subfolder}/{name}" if subfolder else name,
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token,
                    local_files_only=local_files_only,
                )
            else:
                loaded[name] = None
        if components:
            raise ValueError(f"unknown pipeline components: {sorted(components)}.")
        return cls(**loaded)
