#!/usr/bin/env python
"""Held-out bits per character of a trained masked diffusion LM (output folder of train_mdm.py).

    python examples/evaluate_mdm.py --model_path outputs/mdm-shakespeare --dataset_name shakespeare --split test
    python examples/evaluate_mdm.py --model_path outputs/mdm-shakespeare --dataset_name my_test.txt

BPC = NELBO / (characters · ln 2) of the piecewise denoiser (block b on its own t interval), the NELBO
integral over t estimated by a fixed-seed stratified Monte-Carlo with `--num_replicates` independent
replicates per window, which give the standard error (see `hf_diffusionblocks.evaluation`). The text
is cut into consecutive windows of `--sequence_length` characters (default: the training length).
Also reports the xz -9 reference in bits per character of the same text, when `xz` is installed.

What is scored: `--split` of a dataset (the builtins' held-out plays or text; a `datasets` dataset's
split), or ALL of a local text file, which is the split it is given as (`--split` then only names it in
the results). `--max_characters N` keeps the first N characters. The log and the JSON say which text
and how many characters were scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import lzma
import os
import shutil
import subprocess
import time

import torch

from hf_diffusionblocks import DiffusionBlocksTextPipeline
from hf_diffusionblocks.data import load_text_corpus
from hf_diffusionblocks.data.text import describe_text_source
from hf_diffusionblocks.evaluation import estimate_nelbo
from hf_diffusionblocks.training.arguments import HelpFormatter
from hf_diffusionblocks.training.progress import progress_bars_wanted
from hf_diffusionblocks.training.runtime import configure_cpu_threads, run_script, setup_logging

logger = logging.getLogger("evaluate_mdm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model_path", required=True, help="Pipeline folder written by examples/train_mdm.py.")
    parser.add_argument("--dataset_name", "--dataset", dest="dataset_name", default="shakespeare",
                        help="'shakespeare', 'jargon', a local text file (scored whole) or a `datasets` dataset.")
    parser.add_argument("--split", default="test",
                        help="Split to score (train/validation/test for the builtins, any split of a `datasets` "
                             "dataset); a local text file is scored whole and recorded as this split.")
    parser.add_argument("--text_column", default=None, help="Text column of a `datasets` dataset (None: 'text').")
    parser.add_argument("--sequence_length", type=int, default=None, help="Window length (default: the model's maximum).")
    parser.add_argument("--max_characters", type=int, default=None, help="Score only the first N characters.")
    parser.add_argument("--num_time_strata", type=int, default=6, help="Strata over t (a multiple of num_blocks).")
    parser.add_argument("--num_replicates", type=int, default=2, help="Independent estimates per window (>= 2).")
    parser.add_argument("--batch_size", type=int, default=64, help="Windows per forward pass.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the Monte-Carlo estimate.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Where the model runs.")
    parser.add_argument("--output_file", default=None, help="Write the results as JSON here (default: <model_path>/eval_<split>.json).")
    args = parser.parse_args(argv)
    if args.max_characters is not None and args.max_characters < 1:
        raise ValueError(f"--max_characters must be >= 1, got {args.max_characters}.")
    return args


def xz_bits_per_character(text: str) -> float:
    """Size of `xz -9` output (the `xz` program if installed, else Python's lzma preset 9) × 8 / characters."""
    data = text.encode("utf-8")
    if shutil.which("xz"):
        compressed = subprocess.run(["xz", "-9", "-c"], input=data, capture_output=True, check=True).stdout
    else:
        compressed = lzma.compress(data, preset=9)
    return len(compressed) * 8 / len(text)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    configure_cpu_threads(torch.device(args.device).type)
    text = load_text_corpus(args.dataset_name, args.split, args.text_column)   # a bad dataset fails before the model loads
    scored = describe_text_source(args.dataset_name, args.split, len(text), args.max_characters)
    if args.max_characters:
        text = text[: args.max_characters]
    logger.info("scoring %s: %d characters", scored, len(text))
    pipeline = DiffusionBlocksTextPipeline.from_pretrained(args.model_path)
    model = pipeline.transformer.to(args.device).eval()
    started = time.perf_counter()
    estimate = estimate_nelbo(
        model, pipeline.tokenizer, text, args.sequence_length, args.num_time_strata, args.num_replicates,
        args.batch_size, args.seed, progress=progress_bars_wanted(),
    )
    results = {
        "model_path": args.model_path,
        "dataset": args.dataset_name,
        "split": args.split,
        "scored_text": scored,
        "num_blocks": model.config.num_blocks,
        "training_steps": model.block_training_steps,
        "sequence_length": args.sequence_length or model.config.max_position_embeddings,
        **estimate.to_dict(),
        "xz_bits_per_character": xz_bits_per_character(pipeline.tokenizer.normalize(text)),
        "seconds": time.perf_counter() - started,
    }
    output_file = args.output_file or os.path.join(args.model_path, f"eval_{args.split}.json")
    with open(output_file, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    logger.info("BPC %.4f ± %.4f (xz -9: %.4f) on %d characters of %s/%s",
                estimate.bits_per_character, estimate.bits_per_character_standard_error,
                results["xz_bits_per_character"], estimate.num_characters, args.dataset_name, args.split)
    for stratum in results["strata"]:   # where the bits go: one line per interval of masking times
        logger.info("  t in [%.3f, %.3f] (block %d): %.4f ± %.4f bits/char", stratum["t_low"], stratum["t_high"],
                    stratum["block_index"], stratum["bits_per_character"], stratum["bits_per_character_standard_error"])
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    run_script(main)
