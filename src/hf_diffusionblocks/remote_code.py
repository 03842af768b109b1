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
component folder of a pipeline). It contains no model code: it re-exports the classes of the installed
library, so the code that runs is the library's own, at the installed version, and a folder written by
one version loads with the next. The library's own `from_pretrained` methods recognise the module name
and never read or run the file.
"""

from __future__ import annotations

import os

from .modeling.block_checkpoint import atomic_write

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
    """The text of `hf_diffusionblocks_classes.py`: an import of every class a saved folder may name."""
    from .families import LOADABLE_CLASSES  # here: families imports the models, which import this module

    names = "".join(f"    {name},\n" for name in sorted(LOADABLE_CLASSES))
    return f"{_HEADER}from {LIBRARY_NAME} import (  # noqa: F401\n{names})\n"


def write_remote_code_module(folder: str | os.PathLike) -> str:
    """Write `hf_diffusionblocks_classes.py` into `folder` (atomically); returns its path."""
    path = os.path.join(str(folder), REMOTE_CODE_FILE)
    source = remote_code_source()

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(source)

    atomic_write(path, write)
    return path


def auto_map_for_config(config) -> dict[str, str] | None:
    """`auto_map` of a family's config.json (AutoConfig and the family's Auto classes), or None for a
    config of no registered family."""
    from .families import find_family_for_config

    family = find_family_for_config(config)
    if family is None:
        return None
    auto_map = {"AutoConfig": f"{REMOTE_CODE_MODULE}.{family.config_class.__name__}"}
    for auto_class in family.auto_classes:
        auto_map[auto_class.__name__] = f"{REMOTE_CODE_MODULE}.{family.model_class.__name__}"
    return auto_map


def library_class(library: str | None, class_name: str, where: str) -> type:
    """The class a saved folder names as `[library, class_name]` when it is one of this library's:
    `library` is the package (`"hf_diffusionblocks"`) or the re-export module (`"hf_diffusionblocks_classes"`).
    The file is never read: the name is looked up among the classes the library provides."""
    from .families import LOADABLE_CLASSES

    if library not in (LIBRARY_NAME, REMOTE_CODE_MODULE) or class_name not in LOADABLE_CLASSES:
        raise ValueError(
            f"{where} names class {class_name!r} of {library!r}; expected one of {sorted(LOADABLE_CLASSES)} "
            f"of {LIBRARY_NAME!r} (is hf-diffusionblocks up to date?)."
        )
    return LOADABLE_CLASSES[class_name]
