"""The `hf-diffusionblocks` command line: the partition command, and errors without tracebacks."""

from __future__ import annotations

import pytest
from cli_testing import config, model, run  # noqa: F401  (config and model are fixtures)


def test_partition_prints_the_reference_boundaries(capsys):
    status, output, _ = run(capsys, "partition", "--num_blocks", "3", "--layers_per_block", "4", "4", "4")
    assert status == 0
    assert "boundaries (increasing): 0.0020, 0.1796, 0.5050, 80.0000" in output
    assert "partition=equiprobable" in output and "4-7" in output
    status, output, _ = run(
        capsys, "partition", "--num_blocks", "2", "--partition", "uniform_log", "--overlap", "0"
    )
    log_midpoint = (0.002 * 80.0) ** 0.5
    assert status == 0 and f"{log_midpoint:.4f}" in output


def test_partition_rejects_bad_layer_counts(capsys):
    status, _, err = run(capsys, "partition", "--num_blocks", "3", "--layers_per_block", "4", "4")
    assert status == 1 and "layers_per_block" in err


# ---- integrity: what `info` and `assemble` refuse, all reported at once -------------------------------


def test_cli_errors_name_the_file_and_never_print_a_traceback(capsys, model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path, block_indices=[0])
    (tmp_path / "config.json").write_text("{ not json")
    status, _, err = run(capsys, "info", tmp_path)
    assert status == 1 and f"{tmp_path}/config.json is not valid JSON" in err

    import hf_diffusionblocks.command_info as command_info

    def broken(*args, **kwargs):
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr(command_info, "inspect_model", broken)
    status, _, err = run(capsys, "info", tmp_path)
    assert status == 1 and err.strip() == "error: RuntimeError: something unforeseen"


# ---- the parser answers before the library is imported ---------------------------------------------------

HEAVY_MODULES = ("torch", "transformers", "diffusers", "hf_diffusionblocks")


def modules_imported_by(*argv: str) -> tuple[int, list[str], str]:
    """Exit status, the heavy top-level modules imported, and the output of `hf-diffusionblocks ARGV` in a fresh process."""
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from hf_diffusionblocks_cli import main\n"
        "try:\n"
        f"    status = main({list(argv)!r})\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        f"heavy = sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY_MODULES!r}))\n"
        "print(json.dumps([status, heavy]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    status, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    return status, heavy, done.stdout + done.stderr


@pytest.mark.parametrize(
    "argv",
    [("--help",), ("info", "--help"), ("assemble", "--help"), ("partition", "--help"), ("convert", "--help"),
     ("encode", "--help"), ("convert", "a", "b"), ("partition", "--partition", "nope"), ()],
)
def test_help_and_argument_errors_import_no_heavy_library(argv):
    status, heavy, output = modules_imported_by(*argv)
    assert status == (0 if "--help" in argv else 2), output
    assert heavy == [], f"`hf-diffusionblocks {' '.join(argv)}` imported {heavy}"
    assert ("usage: hf-diffusionblocks" in output), output


def test_a_command_that_parses_runs_in_the_library():
    status, heavy, output = modules_imported_by("partition", "--num_blocks", "2")
    assert status == 0 and "boundaries (increasing)" in output
    assert "hf_diffusionblocks" in heavy and "torch" in heavy


def test_parser_choices_are_the_library_s():
    import hf_diffusionblocks_cli
    from hf_diffusionblocks.partition import PARTITIONS
    from hf_diffusionblocks.pretrained.initial_layers import INITS
    from hf_diffusionblocks.pretrained.time_axis import TIME_PARTITIONS

    assert hf_diffusionblocks_cli.PARTITIONS == PARTITIONS
    assert hf_diffusionblocks_cli.TIME_PARTITIONS == TIME_PARTITIONS
    assert hf_diffusionblocks_cli.INITS == INITS


def test_every_parsed_command_has_a_runner():
    import argparse

    from hf_diffusionblocks.cli import COMMANDS
    from hf_diffusionblocks_cli import build_parser

    subparsers = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMANDS)
