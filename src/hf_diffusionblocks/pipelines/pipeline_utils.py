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
import re
from typing import Any, ClassVar, Mapping

import torch
from diffusers import DiffusionPipeline

from ..atomic_io import atomic_save_folder, atomic_write_json, read_json_file
from ..hub_download import HubOptions, resolve_file
from ..loader_keywords import DOWNLOAD_KEYWORDS, LOAD_KEYWORDS, check_keywords, load_dtype
from ..remote_code import LIBRARY_NAME, REMOTE_CODE_MODULE, library_class, write_remote_code_module

MODEL_INDEX_NAME = "model_index.json"
_OTHER_LIBRARIES = ("diffusers", "transformers")
# honoured loader keywords that a pipeline passes on to each of its model components
PIPELINE_MODEL_KEYWORDS = frozenset({"dtype", "torch_dtype", "device", "device_map", "use_safetensors"} | DOWNLOAD_KEYWORDS)


def _component_class(library: str, class_name: str, where: str, known: Mapping[str, type]) -> type:
    """The class of a component entry `[library, class_name]`: one of this library's `known` classes, or
    diffusers'/transformers'."""
    if library in _OTHER_LIBRARIES:
        component_class = getattr(importlib.import_module(library), class_name, None)
        if component_class is None:
            raise ValueError(f"{where}: {library} has no class {class_name!r}.")
        return component_class
    return library_class(library, class_name, where, known)


class DiffusionBlocksPipelineBase(DiffusionPipeline):
    """A `DiffusionPipeline` whose folder loads with the library's own classes."""

    # The classes of this library the pipeline's components may be (a subclass says which): the only ones its
    # `from_pretrained` instantiates from names in model_index.json.
    component_classes: ClassVar[tuple[type, ...]] = ()

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
        force_download: bool = False,
        **kwargs: Any,
    ):
        """Load a pipeline folder or Hub repo (`model_index.json` and one subfolder per component).

        Components given as keyword arguments replace the stored ones. The other keywords are those of
        diffusers' and transformers' loaders, sorted by `loader_keywords.LOAD_KEYWORDS`: `dtype` (or
        `torch_dtype`), `device_map` and huggingface_hub's download options reach every model component's
        `from_pretrained`; options this library does not implement are refused by name.
        """
        options = HubOptions(subfolder, revision, cache_dir, token, local_files_only, force_download)
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
        components = {name: kwargs.pop(name) for name in list(kwargs) if name in model_index and not name.startswith("_")}
        model_options = _model_loading_options(kwargs, f"{cls.__name__}.from_pretrained")
        loaded: dict[str, Any] = {}
        for name, entry in model_index.items():
            if name.startswith("_"):
                continue
            check_component_entry(name, entry, index_path)
            if name in components:
                loaded[name] = components.pop(name)
            elif isinstance(entry, list) and entry[0] is not None:
                known = {component_class.__name__: component_class for component_class in cls.component_classes}
                component_class = _component_class(*entry, where=f"{index_path} ({name})", known=known)
                loaded[name] = component_class.from_pretrained(
                    source,
                    subfolder=f"{subfolder}/{name}" if subfolder else name,
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token,
                    local_files_only=local_files_only,
                    **(dict(force_download=force_download, **model_options) if issubclass(component_class, torch.nn.Module) else {}),
                )
            else:
                loaded[name] = None
        return cls(**loaded)


def check_component_entry(name: str, entry: Any, index_path: str) -> None:
    """A `ValueError` naming `index_path` unless `name` is a component folder's plain name (no path: it is the
    subfolder the component loads from, which stays inside the pipeline folder) and `entry` is `[library, class]`
    or null (a component left empty)."""
    if not _COMPONENT_NAME.match(name):
        raise ValueError(
            f"{index_path}: component {name!r} is not a plain folder name (letters, digits, '_', '-', '.'; no path)."
        )
    if entry is None or entry == [None, None]:
        return
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
        raise ValueError(
            f"{index_path}: component {name!r} must be [library, class name] (or null), got {entry!r}."
        )


_COMPONENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _model_loading_options(kwargs: dict[str, Any], owner: str) -> dict[str, Any]:
    """The loader keywords a pipeline hands to its model components: sorted by the one table
    (`loader_keywords.LOAD_KEYWORDS`), refused by name where this library does not implement them, and
    limited to what applies to every component (`config`, `block_index`, … name one model's files)."""
    honoured = check_keywords(kwargs, LOAD_KEYWORDS, owner)
    per_model = sorted(set(honoured) - PIPELINE_MODEL_KEYWORDS)
    if per_model:
        raise ValueError(f"{owner} got {per_model}: load that component with its own from_pretrained and pass it by name.")
    dtype = load_dtype(honoured, owner)
    return honoured if dtype is None else {**honoured, "dtype": dtype}
