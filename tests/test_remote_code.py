"""The re-export module saved folders carry for `trust_remote_code=True`, and what the library's own loader accepts."""

from __future__ import annotations

import ast
import json

import pytest
from family_fixtures import tiny_config

import hf_diffusionblocks
from hf_diffusionblocks import FAMILIES, DiffusionBlocksDiTModel, DiffusionBlocksImagePipeline, DiffusionBlocksPreTrainedModel
from hf_diffusionblocks.families import LOADABLE_CLASSES
from hf_diffusionblocks.remote_code import (
    REMOTE_CODE_FILE,
    REMOTE_CODE_MODULE,
    auto_map_for_model_class,
    remote_code_source,
)


def imported_names() -> set[str]:
    """What the module does besides its docstring: one import of every public name of the installed library."""
    statements = [node for node in ast.parse(remote_code_source()).body if not isinstance(node, ast.Expr)]
    assert len(statements) == 1 and isinstance(statements[0], ast.ImportFrom)
    assert statements[0].module == "hf_diffusionblocks" and statements[0].level == 0
    assert [alias.name for alias in statements[0].names] == ["*"]
    return set(hf_diffusionblocks.__all__)


def test_the_module_re_exports_every_class_a_folder_may_name():
    imported = imported_names()
    for name, cls in LOADABLE_CLASSES.items():
        assert name in imported and getattr(hf_diffusionblocks, name) is cls


def test_auto_map_names_each_family_classes_in_the_module():
    imported = imported_names()
    for family in FAMILIES.values():
        auto_map = auto_map_for_model_class(family.model_class)
        assert auto_map["AutoConfig"] == f"{REMOTE_CODE_MODULE}.{family.config_class.__name__}"
        assert {auto.__name__ for auto in family.auto_classes} | {"AutoConfig"} == set(auto_map)
        assert {reference.split(".", 1)[1] for reference in auto_map.values()} <= imported


def test_a_derived_model_class_is_mapped_to_the_family_class_the_module_provides():
    class MyDiT(DiffusionBlocksDiTModel):
        pass

    assert auto_map_for_model_class(MyDiT) == auto_map_for_model_class(DiffusionBlocksDiTModel)
    assert auto_map_for_model_class(DiffusionBlocksPreTrainedModel) is None


@pytest.fixture
def pipeline_folder(tmp_path):
    family = FAMILIES["dit"]
    family.build_pipeline(family.model_class(tiny_config(family))).save_pretrained(tmp_path)
    return tmp_path


def rewrite_index(folder, **entries) -> None:
    path = folder / "model_index.json"
    index = json.loads(path.read_text())
    index.update(entries)
    path.write_text(json.dumps(index))


def test_folders_saved_before_the_module_existed_still_load(pipeline_folder):
    rewrite_index(pipeline_folder, _class_name="DiffusionBlocksImagePipeline",
                  transformer=["hf_diffusionblocks", "DiffusionBlocksDiTModel"],
                  scheduler=["hf_diffusionblocks", "DiffusionBlocksScheduler"])
    for path in pipeline_folder.rglob(REMOTE_CODE_FILE):
        path.unlink()
    assert DiffusionBlocksImagePipeline.from_pretrained(pipeline_folder).transformer.is_complete


def test_the_library_never_imports_a_module_a_folder_names(pipeline_folder):
    (pipeline_folder / "transformer" / "evil.py").write_text("raise SystemExit('ran')\n")
    rewrite_index(pipeline_folder, transformer=["evil", "DiffusionBlocksDiTModel"])
    with pytest.raises(ValueError, match="names class 'DiffusionBlocksDiTModel' of 'evil'"):
        DiffusionBlocksImagePipeline.from_pretrained(pipeline_folder)
    rewrite_index(pipeline_folder, transformer=[REMOTE_CODE_MODULE, "os"])
    with pytest.raises(ValueError, match="names class 'os'"):
        DiffusionBlocksImagePipeline.from_pretrained(pipeline_folder)
