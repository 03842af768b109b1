"""Loading saved folders with transformers' and diffusers' own entry points (`trust_remote_code=True`).

transformers' Auto classes and diffusers' `DiffusionPipeline` know only their own classes. For a class
of another library they import a Python file stored with the model, when the caller allows it with
`trust_remote_code=True`:

- transformers: `auto_map` in `config.json` maps an Auto class to `"<module>.<ClassName>"`, and
  `AutoConfig/AutoModel*.from_pretrained(folder, trust_remote_code=True)` imports `<module>.py` from the
  folder.
- diffusers: `model_index.json` names the pipeline as `"_class_name": ["<module>", "<ClassName>"]`, imported
  from `<module>.py` at the root of the folder, and every component as `["<module>", "<ClassName>"]`, imported
  from `<component>/<module>.py`.

Every folder this library saves therefore holds `hf_diffusionblocks_classes.py` (at its root and in each
component folder of a pipeline). It contains no model code: it re-exports the public names of the installed
library (`from hf_diffusionblocks import *`), so the code that runs is the library's own, at the installed
version, a folder written by one version loads with the next, and the file never needs to know which
classes exist (that is the registry's business, two layers up: this module sits at the bottom, beside
`atomic_io`, because model folders and pipeline folders both write it). The library's own `from_pretrained`
methods recognise the module name and never read or run the file.
"""

from __future__ import annotations

import os
from typing import Mapping

from .atomic_io import atomic_write_text

REMOTE_CODE_MODULE = "hf_diffusionblocks_classes"
REMOTE_CODE_FILE = f"{REMOTE_CODE_MODULE}.py"
LIBRARY_NAME = "hf_diffusionblocks"

_HEADER = '''"""Classes of the installed `hf-diffusionblocks` library, for loading this folder with `trust_remote_code=True`.

transformers' Auto classes (through `auto_map` in config.json) and diffusers' `DiffusionPipeline`
(through model_index.json) import the classes they need from this file. It holds no model code: it
re-exports the installed library (`pip install hf-diffusionblocks`). With the library imported,
`from hf_diffusionblocks import ...` loads the folder without this file.
"""

'''


def remote_code_source() -> str:
    """The text of `hf_diffusionblocks_classes.py`: a re-export of the installed library's public names."""
    return f"{_HEADER}from {LIBRARY_NAME} import *  # noqa: F401,F403\n"


def write_remote_code_module(folder: str | os.PathLike) -> str:
    """Write `hf_diffusionblocks_classes.py` into `folder` (atomically); returns its path."""
    path = os.path.join(str(folder), REMOTE_CODE_FILE)
    atomic_write_text(path, remote_code_source())
    return path


def auto_map_for_model_class(model_class: type) -> dict[str, str] | None:
    """`auto_map` of the config.json a model of `model_class` saves: AutoConfig and the Auto classes the
    class declares (`auto_model_classes`), or None for a class that declares none.

    A subclass that declares nothing itself (one a user derives) is mapped to the class that declared the
    Auto classes: that is the class the re-export module provides.
    """
    owner = next((cls for cls in model_class.__mro__ if vars(cls).get("auto_model_classes")), None)
    if owner is None:
        return None
    auto_map = {"AutoConfig": f"{REMOTE_CODE_MODULE}.{owner.config_class.__name__}"}
    for auto_class in owner.auto_model_classes:
        auto_map[auto_class.__name__] = f"{REMOTE_CODE_MODULE}.{owner.__name__}"
    return auto_map


def library_class(library: str | None, class_name: str, where: str, known: Mapping[str, type]) -> type:
    """The class a saved folder names as `[library, class_name]` when it is one of this library's `known`
    classes (by name): `library` is the package (`"hf_diffusionblocks"`) or the re-export module
    (`"hf_diffusionblocks_classes"`). The file is never read: the name is looked up in `known`."""
    if library not in (LIBRARY_NAME, REMOTE_CODE_MODULE) or class_name not in known:
        raise ValueError(
            f"{where} names class {class_name!r} of {library!r}; expected one of {sorted(known)} "
            f"of {LIBRARY_NAME!r} (is hf-diffusionblocks up to date?)."
        )
    return known[class_name]
