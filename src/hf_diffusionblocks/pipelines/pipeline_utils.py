"""Shared base of the library's diffusers pipelines: saving and loading a pipeline folder.

On save, `model_index.json` names the pipeline and every component of this library as
`["hf_diffusionblocks_classes", "<ClassName>"]`, and `hf_diffusionblocks_classes.py` (a re-export of the
installed library, see `remote_code.py`) is written at the root and into each such component folder: that
is the convention by which `diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`
finds classes that are not diffusers' own. The library's own `from_pretrained` reads `model_index.json`
itself and loads each component with the library's class, without reading that file. Every file reaches
the folder by an atomic rename: processes of a block-parallel launch save into the same folder while
others read it.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

from diffusers import DiffusionPipeline

from ..hub_utils import HubOptions, resolve_file
from ..modeling.atomic_io import atomic_save_folder, atomic_write_json, read_json_file
from ..remote_code import LIBRARY_NAME, REMOTE_CODE_MODULE, library_class, write_remote_code_module

MODEL_INDEX_NAME = "model_index.json"
_OTHER_LIBRARIES = ("diffusers", "transformers")


def _component_class(library: str, class_name: str, where: str) -> type:
    """The class of a component entry `[library, class_name]`: this library's, or diffusers'/transformers'."""
    if library in _OTHER_LIBRARIES:
        component_class = getattr(importlib.import_module(library), class_name, None)
        if component_class is None:
            raise ValueError(f"{where}: {library} has no class {class_name!r}.")
        return component_class
    return library_class(library, class_name, where)


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
            model_index["_class_name"] = [REMOTE_CODE_MODULE, type(self).__name__]
            write_remote_code_module(staging)
            for name, entry in model_index.items():
                if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
                    continue
                component = getattr(self, name)
                if type(component).__module__.startswith(LIBRARY_NAME + "."):
                    model_index[name] = [REMOTE_CODE_MODULE, type(component).__name__]
                    write_remote_code_module(os.path.join(staging, name))
            atomic_write_json(index_path, model_index)

        # block files last: a block file present means everything its save wrote is there (what resuming tests for)
        atomic_save_folder(save_directory, save, last=(MODEL_INDEX_NAME, "block_*.safetensors"))

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
        model_index = read_json_file(index_path)
        if not isinstance(model_index, dict):
            raise ValueError(f"{index_path} holds JSON but not an object of pipeline components.")
        class_name = model_index.get("_class_name")
        # `[module, name]` since the folders load with diffusers' `trust_remote_code`; a bare name before
        class_name = class_name[-1] if isinstance(class_name, list) and len(class_name) == 2 else class_name
        if class_name != cls.__name__:
            raise ValueError(f"{source} holds a {class_name!r} pipeline, not a {cls.__name__}.")
        loaded: dict[str, Any] = {}
        for name, entry in model_index.items():
            if name.startswith("_"):
                continue
            if name in components:
                loaded[name] = components.pop(name)
            elif isinstance(entry, list) and len(entry) == 2 and entry[0] is not None:
                loaded[name] = _component_class(*entry, where=f"{index_path} ({name})").from_pretrained(
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
