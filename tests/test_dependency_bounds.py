"""The declared dependency floors are the ones CI proves: constraints/oldest.txt pins every lower bound of
pyproject.toml (dependencies and the extras CI installs), and `.ci/run` tests that world as well as the newest."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9][^,;\s]*))?")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_floors() -> dict[str, str | None]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"] + project["optional-dependencies"]["metrics"]
    floors = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        assert match, f"pyproject.toml: cannot read the requirement {requirement!r}"
        floors[_name(match.group(1))] = match.group(2)
    return floors


def oldest_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / "oldest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_name(name)] = version.strip()
    return pins


def _release(version: str) -> tuple[int, ...]:
    parts = [int(part) for part in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:  # 2.13 == 2.13.0
        parts.pop()
    return tuple(parts)


def test_every_declared_floor_is_pinned_in_the_oldest_world():
    floors, pins = declared_floors(), oldest_pins()
    for name, floor in floors.items():
        if floor is None:
            continue  # no floor declared: the oldest world takes what resolves
        assert name in pins, f"constraints/oldest.txt does not pin {name} (pyproject.toml: >={floor})"
        assert _release(pins[name]) == _release(floor), f"{name}: pyproject.toml says >={floor}, constraints/oldest.txt pins {pins[name]}"
    assert not set(pins) - set(floors), f"constraints/oldest.txt pins packages pyproject.toml does not name: {sorted(set(pins) - set(floors))}"


def test_ci_runs_both_worlds():
    script = (ROOT / ".ci" / "run").read_text()
    assert "run_world newest" in script and "run_world oldest -c constraints/oldest.txt" in script
