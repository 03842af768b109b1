"""What every model family must do, run over the registry: a new entry in `FAMILIES` gets these tests for free.

tiny config → save (a pipeline folder for families with a pipeline) → load whole → load one block →
`hf-diffusionblocks info` → `assemble` → model card (Hub pipeline tag, true default step count, partition
table) → the card's usage snippet, run → transformers'/diffusers' own `from_pretrained(..., trust_remote_code=True)`
in a fresh process that never imports the library by hand.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import randomize_
from family_fixtures import tiny_config, tiny_pipeline_components
from huggingface_hub import ModelCard

from hf_diffusionblocks import FAMILIES, ModelFamily
from hf_diffusionblocks.cli import main as cli_main
from hf_diffusionblocks.model_card import partition_table, write_model_card
from hf_diffusionblocks.remote_code import REMOTE_CODE_FILE

FAMILY_NAMES = sorted(FAMILIES)
SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"


def weights_fingerprint(model: torch.nn.Module) -> list[float]:
    """One float per tensor, in name order: equal models give equal lists."""
    return [float(tensor.double().abs().sum()) for _, tensor in sorted(model.state_dict().items())]


def save_family(family: ModelFamily, folder: Path) -> tuple[torch.nn.Module, Path]:
    """A complete folder of the family (a pipeline folder when it has a pipeline); returns the model and its folder."""
    model = randomize_(family.model_class(tiny_config(family)), std=0.1).eval()
    if family.pipeline_class is None:
        model.save_pretrained(folder, training_steps={index: 3 for index in range(model.config.num_blocks)})
        return model, folder
    family.build_pipeline(model, **tiny_pipeline_components(family)).save_pretrained(folder)
    return model, folder / "transformer"


def python_blocks(card_text: str, heading: str) -> list[str]:
    """The ```python blocks of the card's section `heading` (up to the next `## `)."""
    section = card_text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture(params=FAMILY_NAMES)
def family(request) -> ModelFamily:
    return FAMILIES[request.param]


def test_registry_names_every_piece(family):
    config = tiny_config(family)
    assert config.model_type == family.model_type and isinstance(config, family.config_class)
    assert family.model_class.config_class is family.config_class
    for auto_class in family.auto_classes:  # the package registered the model with each Auto class
        assert auto_class._model_mapping[family.config_class] is family.model_class
    sampler = family.pipeline_class if family.pipeline_class is not None else family.model_class
    assert callable(getattr(sampler, family.sampling_method))
    assert isinstance(family.default_steps(config), int) and family.default_steps(config) >= 1


def test_save_load_info_assemble(family, tmp_path, capsys):
    model, model_dir = save_family(family, tmp_path / "saved")

    whole = family.model_class.from_pretrained(model_dir)
    assert whole.is_complete and weights_fingerprint(whole) == weights_fingerprint(model)

    last = model.config.num_blocks - 1
    one_block = family.model_class.from_pretrained(model_dir, block_index=last)
    assert one_block.loaded_block_indices == [last]
    assert all(torch.equal(tensor, model.state_dict()[name]) for name, tensor in one_block.state_dict().items())

    assert cli_main(["info", str(tmp_path / "saved")]) == 0
    output = capsys.readouterr().out
    assert f"model_type: {family.model_type} ({family.model_class.__name__})" in output
    assert partition_table(model.config) in output and "missing blocks: []" in output

    # folders written by separate block runs merge into one complete folder
    model.save_pretrained(tmp_path / "first", block_indices=[0])
    model.save_pretrained(tmp_path / "rest", block_indices=list(range(1, last + 1)) or [0])
    assert cli_main(["assemble", str(tmp_path / "merged"), str(tmp_path / "first"), str(tmp_path / "rest")]) == 0
    assert "missing blocks: []" in capsys.readouterr().out
    merged = family.model_class.from_pretrained(tmp_path / "merged")
    assert weights_fingerprint(merged) == weights_fingerprint(model)
    assert (tmp_path / "merged" / REMOTE_CODE_FILE).is_file()


def test_card_states_the_true_defaults_and_its_usage_runs(family, tmp_path, monkeypatch):
    model, model_dir = save_family(family, tmp_path / "saved")
    folder = tmp_path / "saved"
    write_model_card(folder, dataset="toy", training_mode="blockwise", metrics={"score": 1.25}, repo_id=str(folder))
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == family.pipeline_tag and family.name in card.data.tags
    assert partition_table(model.config) in card.text and "| score | 1.25 |" in card.text

    # the step count the card states is the one a call without the steps argument uses
    default_steps = family.default_steps(model.config)
    assert f"`{family.steps_argument}={default_steps}`" in card.text
    if family.pipeline_class is not None:
        signature = inspect.signature(family.pipeline_class.__call__)
        assert signature.parameters[family.steps_argument].default == default_steps

    # the snippet that uses the library runs as written (the folder stands in for the Hub repo)
    library_code, native_code = python_blocks(card.text, "How to use")
    assert "hf_diffusionblocks" in library_code and "hf_diffusionblocks" not in native_code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(library_code, f"<{family.name} card>", "exec"), namespace)
    assert namespace["block"].loaded_block_indices == [0]
    sampled = [namespace[name] for name in ("images", "texts", "output_ids", "predicted") if name in namespace]
    assert len(sampled) == 1 and len(sampled[0]) >= 1


NATIVE_CHECK = textwrap.dedent(
    """
    import json, sys
    assert "hf_diffusionblocks" not in sys.modules
    import torch
    from transformers import AutoConfig
    import transformers

    folder, model_dir, auto_class_names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    results = {"config_class": type(config).__name__, "models": {}}
    for name in auto_class_names:
        model = getattr(transformers, name).from_pretrained(model_dir, trust_remote_code=True)
        results["models"][name] = [type(model).__name__,
                                   [float(t.double().abs().sum()) for _, t in sorted(model.state_dict().items())]]
    if folder != model_dir:
        from diffusers import DiffusionPipeline
        pipeline = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
        pipeline.set_progress_bar_config(disable=True)
        results["pipeline_class"] = type(pipeline).__name__
        results["components"] = sorted(type(c).__name__ for c in pipeline.components.values() if c is not None)
    namespace = {}
    exec(sys.argv[4], namespace)  # the card's snippet without the library
    results["snippet_ran"] = True
    print("RESULTS" + json.dumps(results))
    """
)


def test_native_loading_in_a_fresh_process(family, tmp_path):
    model, model_dir = save_family(family, tmp_path / "saved")
    folder = tmp_path / "saved"
    write_model_card(folder, dataset="toy", training_mode="blockwise", repo_id=str(folder))
    _, native_code = python_blocks((folder / "README.md").read_text(encoding="utf-8"), "How to use")
    auto_names = [auto_class.__name__ for auto_class in family.auto_classes]
    environment = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", NATIVE_CHECK, str(folder), str(model_dir), ",".join(auto_names), native_code],
        capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.split("RESULTS", 1)[1])
    assert results["config_class"] == family.config_class.__name__
    for name in auto_names:
        assert results["models"][name] == [family.model_class.__name__, weights_fingerprint(model)]
    if family.pipeline_class is not None:
        assert results["pipeline_class"] == family.pipeline_class.__name__
        assert family.model_class.__name__ in results["components"]
    assert results["snippet_ran"]


def test_one_block_trains_alone(family):
    torch.manual_seed(0)
    model = family.model_class(tiny_config(family)).train()
    generator = torch.Generator().manual_seed(0)
    batch = family.example_batch(model.config, 3, generator)
    block_index = model.config.num_blocks - 1
    loss = family.block_loss(model, block_index, batch, generator)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    prefix = f"blocks.{block_index}."
    gradients = {name: parameter.grad for name, parameter in model.named_parameters()}
    assert all(gradient is None or not gradient.any() for name, gradient in gradients.items() if not name.startswith(prefix))
    assert any(gradient is not None and gradient.any() for name, gradient in gradients.items() if name.startswith(prefix))
    # the same block alone, as a block run builds it, computes the same loss from the same draws
    alone = family.model_class(model.config, block_indices=[block_index]).train()
    alone.load_state_dict(model.block_state_dict(block_index))
    replay = torch.Generator().manual_seed(0)
    assert torch.allclose(family.block_loss(alone, block_index, family.example_batch(model.config, 3, replay), replay), loss)


def test_families_are_leaves():
    """No module of a family imports another family: what two share lives in `modeling/` (or deeper)."""
    import ast

    models_root = SOURCE_ROOT / "hf_diffusionblocks" / "models"
    family_folders = sorted(path.name for path in models_root.iterdir() if (path / "__init__.py").is_file())
    for folder in family_folders:
        for module in (models_root / folder).glob("*.py"):
            for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    names = [("." * node.level) + (node.module or "")]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                for name in names:
                    imported = {other for other in family_folders if other != folder
                                and (name == f"..{other}" or name.startswith(f"..{other}.")
                                     or f"models.{other}" in name)}
                    assert not imported, f"{module.relative_to(SOURCE_ROOT)} imports family {imported}: {name}"
