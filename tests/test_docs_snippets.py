"""Every ```bash and ```python block of README.md and docs/*.md runs as written.

README.md and then docs/guide.md run block after block in one temporary folder where the repository's
top-level entries (examples/, benchmarks/, ...) are linked, so a training command's output folder is what the
sampling snippet below it loads, as for a reader who copies the blocks one after another from the repository
root (a test marked slow: minutes, a process per command); the other documents' blocks need no earlier output
and run in the fast suite, in a folder of their own. `HF_DIFFUSIONBLOCKS_SMOKE=1` is set: the scripts cap
their step counts and sizes (src/hf_diffusionblocks/smoke.py), so every command finishes in seconds.

What is not run, by rule or by marker:
- in a bash block, the commands that set up the environment the tests already run in (`python3 -m venv`,
  activating it, `pip install`) and the commands that run the test suite itself (`python -m pytest`,
  `bash .ci/run`); each is listed with its reason;
- a block right after the line `<!-- snippet: skip (reason) -->` (a Hub upload or download, a launch on
  several devices). There are at most `MAX_SKIPPED_BLOCKS` such blocks; the count and the reasons are printed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SKIP_MARKER = re.compile(r"^<!-- snippet: skip \((?P<reason>[^)]+)\) -->$")
MAX_SKIPPED_BLOCKS = 6
# the documents whose blocks build on each other: a reader's path from a fresh clone (README.md's training
# commands write the folders that its sampling snippets and docs/guide.md's snippets load). They take minutes
# even at smoke settings (a process per command, each importing torch), so their test is marked slow; every
# other document's blocks run in the fast suite.
READER_PATH = ("README.md", "docs/guide.md")
# (pattern of one command of a bash block, why the test does not run it)
NOT_RUN_BY_RULE = (
    (re.compile(r"^python3? -m venv\b"), "environment setup: the tests run in an installed environment"),
    (re.compile(r"^(\.|source) \S*bin/activate$"), "environment setup: the tests run in an installed environment"),
    (re.compile(r"^(python3? -m )?pip install\b"), "environment setup: the tests run in an installed environment"),
    (re.compile(r"^python3? -m pytest\b"), "the test suite itself (this test is part of it)"),
    (re.compile(r"^bash \.ci/run\b"), "the test suite itself (this test is part of it)"),
)
BLOCK_TIMEOUT_S = 600


@dataclass
class Snippet:
    document: str  # relative to the repository
    line: int  # of the opening fence
    language: str  # "bash" or "python"
    code: str
    skip_reason: str | None

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def documents(root: Path = REPOSITORY) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "docs" / "results").glob("*.md"))]


def extract_snippets(path: Path, root: Path = REPOSITORY) -> list[Snippet]:
    """The ```bash and ```python blocks of one Markdown file, with the skip marker each one carries."""
    snippets, lines = [], path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{path}:{index + 1}: a code block is never closed.")
        if fence.group(1) in ("bash", "python"):
            previous = next((lines[j].strip() for j in range(index - 1, -1, -1) if lines[j].strip()), "")
            marker = SKIP_MARKER.match(previous)
            snippets.append(Snippet(str(path.relative_to(root)), index + 1, fence.group(1),
                                    "\n".join(lines[index + 1 : end]) + "\n", marker.group("reason") if marker else None))
        index = end + 1
    return snippets


def logical_lines(code: str) -> list[str]:
    """The lines of a bash block with backslash continuations joined."""
    return re.sub(r"[ \t]*\\\n\s*", " ", code).splitlines()


def rule_for(command: str) -> str | None:
    """Why `command` is not run (see `NOT_RUN_BY_RULE`), or None when it is."""
    command = re.sub(r"\s+#.*$", "", command).strip()
    return next((reason for pattern, reason in NOT_RUN_BY_RULE if pattern.search(command)), None)


def runnable_script(snippet: Snippet) -> tuple[str, list[tuple[str, str]]]:
    """The text to run and the (command, reason) pairs left out by rule: in a bash block, a line whose
    `&&`-chained commands include one that a rule leaves out keeps only the others; any other line (a
    comment, a line inside a quoted multi-line argument) is run as written."""
    if snippet.language == "python":
        return snippet.code, []
    kept, left_out = [], []
    for line in logical_lines(snippet.code):
        parts = [part.strip() for part in line.split(" && ")]
        reasons = [rule_for(part) for part in parts]
        if not any(reasons):
            kept.append(line)
            continue
        left_out += [(part, reason) for part, reason in zip(parts, reasons) if reason]
        remaining = [part for part, reason in zip(parts, reasons) if not reason]
        if remaining:
            kept.append(" && ".join(remaining))
    return "set -euo pipefail\n" + "\n".join(kept) + "\n", left_out


def prepare_folder(folder: Path) -> None:
    """Link the repository's top-level entries into `folder` (what the documents' relative paths name)."""
    for entry in REPOSITORY.iterdir():
        if entry.name.startswith(".") or entry.name in ("outputs",):
            continue
        (folder / entry.name).symlink_to(entry)


def snippet_environment() -> dict[str, str]:
    environment = dict(os.environ, HF_DIFFUSIONBLOCKS_SMOKE="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    # `python` and the console scripts (hf-diffusionblocks, accelerate, torchrun) of the environment running the tests
    environment["PATH"] = os.path.dirname(sys.executable) + os.pathsep + environment.get("PATH", "")
    source = str(REPOSITORY / "src")
    environment["PYTHONPATH"] = source + os.pathsep + environment.get("PYTHONPATH", "") if environment.get("PYTHONPATH") else source
    return environment


def run_snippet(snippet: Snippet, folder: Path, number: int, environment: dict[str, str]) -> tuple[float, list[tuple[str, str]]]:
    script, left_out = runnable_script(snippet)
    name = folder / f"snippet_{number:02d}.{'py' if snippet.language == 'python' else 'sh'}"
    name.write_text(script, encoding="utf-8")
    command = [sys.executable, str(name)] if snippet.language == "python" else [shutil.which("bash") or "bash", str(name)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        pytest.fail(f"{snippet.where} ({snippet.language} block) exited with {result.returncode}:\n{script}\n--- output ---\n{output}")
    if "Traceback (most recent call last)" in result.stderr:
        pytest.fail(f"{snippet.where} printed a traceback:\n{result.stderr[-4000:]}")
    return seconds, left_out


def all_snippets() -> list[Snippet]:
    return [snippet for path in documents() for snippet in extract_snippets(path)]


def run_in_order(snippets: list[Snippet], folder: Path) -> None:
    """Run `snippets` one after another in `folder`, printing each block's wall time as it finishes."""
    prepare_folder(folder)
    environment = snippet_environment()
    print()
    for number, snippet in enumerate(snippets):
        if snippet.skip_reason:
            print(f"{snippet.where:<32} skipped by marker: {snippet.skip_reason}", flush=True)
            continue
        seconds, left_out = run_snippet(snippet, folder, number, environment)
        print(f"{snippet.where:<32} {seconds:6.1f} s", flush=True)
        for command, reason in left_out:
            print(f"{'':<32}   not run: {command}  ({reason})", flush=True)


def test_extraction_rules(tmp_path):
    document = tmp_path / "doc.md"
    document.write_text(
        "text\n```bash\npython3 -m venv .venv && . .venv/bin/activate && pip install -e . && python a.py \\\n"
        "    --flag 1   # trailing comment\n# a comment line\npython -m pytest -q\n```\n\n"
        "<!-- snippet: skip (needs the Hub) -->\n\n```python\nprint(1)\n```\n```text\nnot code\n```\n",
        encoding="utf-8",
    )
    bash, python = extract_snippets(document, tmp_path)
    assert (bash.line, bash.skip_reason, python.line, python.skip_reason) == (2, None, 11, "needs the Hub")
    script, left_out = runnable_script(bash)
    assert script.splitlines()[1:] == ["python a.py --flag 1   # trailing comment", "# a comment line"]
    assert [command for command, _ in left_out] == [
        "python3 -m venv .venv", ". .venv/bin/activate", "pip install -e .", "python -m pytest -q"]


def test_few_blocks_are_marked_not_to_run():
    snippets = all_snippets()
    skipped = [snippet for snippet in snippets if snippet.skip_reason]
    print(f"\n{len(snippets)} bash/python blocks; {len(skipped)} marked not to run:")
    for snippet in skipped:
        print(f"  {snippet.where}: {snippet.skip_reason}")
    assert snippets, "no bash or python block found in the documentation"
    assert len(skipped) <= MAX_SKIPPED_BLOCKS, [snippet.where for snippet in skipped]


def test_the_standalone_documents_blocks_run(tmp_path):
    """The blocks of docs/*.md and docs/results/*.md other than the guide: each needs no earlier output."""
    run_in_order([snippet for snippet in all_snippets() if snippet.document not in READER_PATH], tmp_path)


@pytest.mark.slow
def test_the_readme_and_guide_blocks_run_in_order(tmp_path):
    """README.md then docs/guide.md, block after block in one folder: every family trained and sampled, the
    pretrained path built, converted, fine-tuned and sampled (a few minutes on 2 CPU cores)."""
    run_in_order([snippet for snippet in all_snippets() if snippet.document in READER_PATH], tmp_path)
