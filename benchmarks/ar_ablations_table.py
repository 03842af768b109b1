#!/usr/bin/env python
"""The autoregressive ablation table (docs/results/causal_lm.md), from the files `benchmarks/ar_ablations.sh` writes.

One row per model folder `<root>/ar-<name>` that has been evaluated (`ar-<name>.eval.json`): MAUVE
(mean ± std over k-means seeds) and generative perplexity of each decoding and solver, and for block-wise
models the teacher-forced diagnosis (`ar-<name>.diagnosis-<solver>.json`): the next-token probability
p(target) of block 0's readout at σ_max (the distribution a chain starting there draws from) and the
accuracy of the token at the end of the chain, which is what generation outputs.

    python benchmarks/ar_ablations_table.py outputs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def result_cells(result: dict) -> str:
    mauve = result.get("mauve")
    mauve_text = f"{mauve['mauve']:.3f} ± {mauve['mauve_std']:.3f}" if mauve else "n/a"
    perplexity = result.get("generative_perplexity", {}).get("generative_perplexity")
    return f"{mauve_text} | {perplexity:.1f}" if perplexity is not None else f"{mauve_text} | n/a"


def diagnosis_cells(path: Path) -> str:
    if not path.is_file():
        return "| "
    rows = json.loads(path.read_text())["rows"]
    first = next(row for name, row in rows.items() if name.startswith("step 0 fresh"))
    final = rows["final z, nearest E row"]
    return f"{100 * first['target_probability']:.1f}% | {100 * final['accuracy']:.1f}%"


def end_to_end_cells(root: Path, name: str) -> str:
    """An end-to-end model's p(target): the expected accuracy of a token sampled from it (a diagnosis that used it
    as its reference row), and its greedy accuracy."""
    for path in sorted(root.glob("ar-*.diagnosis-*.json")):
        report = json.loads(path.read_text())
        if Path(report["arguments"].get("end_to_end_dir") or "").name == f"ar-{name}":
            row = report["rows"]["end to end"]
            return f"{100 * row['target_probability']:.1f}% (its readout) | {100 * row['accuracy']:.1f}% (greedy)"
    return "| "


def order(path: Path) -> tuple:
    name = path.name[len("ar-"):-len(".eval.json")]
    return (not name.startswith("end_to_end"), name != "blockwise", name)


def table(root: Path) -> str:
    lines = ["| model | decoding | MAUVE ↑ | gen. perplexity ↓ | p(target) of block 0 at σ_max | accuracy of the chain's token |",
             "|---|---|---|---|---|---|"]
    human = None
    for path in sorted(root.glob("ar-*.eval.json"), key=order):
        report = json.loads(path.read_text())
        name = path.name[len("ar-"):-len(".eval.json")]
        human = human or report["results"][0]
        for result in report["results"][1:]:
            decoding = result["name"][len(name) + 2:-1]                       # "<name> (<decoding>[, <solver>])"
            solver = decoding.split(", ")[1] if ", " in decoding else None
            diagnosis = diagnosis_cells(root / f"ar-{name}.diagnosis-{solver}.json") if solver else end_to_end_cells(root, name)
            lines.append(f"| {name} | {decoding} | {result_cells(result)} | {diagnosis} |")
    if human is not None:
        lines.insert(2, f"| human continuations (other places) | — | {result_cells(human)} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="OUTPUT_ROOT of benchmarks/ar_ablations.sh.")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        raise SystemExit(f"error: {root} is not a folder.")
    text = table(root)
    print(text)
    return text


if __name__ == "__main__":
    main()
