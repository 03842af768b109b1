"""Every script of examples/ documents every flag in `--help` and shows its default."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(path.stem for path in (ROOT / "examples").glob("*.py"))


class CapturedParser(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def script_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a script's `parse_args` builds (captured when it parses, before any check of the values)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def capture(self, *args, **kwargs):
        raise CapturedParser(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(CapturedParser) as captured:
        module.parse_args([])
    return captured.value.parser


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_has_help_and_its_default_is_shown(name, monkeypatch):
    parser = script_parser(name, monkeypatch)
    undocumented = [action.option_strings[0] for action in parser._actions
                    if action.option_strings and not (action.help or "").strip()]
    assert not undocumented, f"{name}.py: flags without help: {undocumented}"
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter), (
        f"{name}.py --help does not show defaults")
