#!/usr/bin/env python
"""Held-out bits per character of a trained masked diffusion LM (output folder of train_mdm.py).

    python examples/evaluate_mdm.py --model_path outputs/mdm-shakespeare --dataset shakespeare --split test

BPC = NELBO / (characters · ln 2) of the piecewise denoiser (block b on its own t interval), the NELBO
integral over t estimated by a fixed-seed stratified Monte-Carlo with `--num_replicates` independent
replicates per window, which give the standard error (see `hf_diffusionblocks.evaluation`). The text
is cut into consecutive windows of `--sequence_length` characters (default: the training length).
Also reports the xz -9 reference in bits per character of the same text, when `xz` is installed.
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
from hf_diffusionblocks.evaluation import estimate_nelbo

logger = logging.getLogger("evaluate_mdm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", required=True, help="Pipeline folder written by examples/train_mdm.py.")
    parser.add_argument("--dataset", default="shakespeare", help="'shakespeare', 'jargon', a .txt file or a `datasets` dataset.")
    parser.add_argument("--split", default="test", help="Held-out split to score (train/validation/test).")
    parser.add_argument("--text_column", default=None, help="Text column of a `datasets` dataset.")
    parser.add_argument("--sequence_length", type=int, default=None, help="Window length (default: the model's maximum).")
    parser.add_argument("--max_characters", type=int, default=None, help="Score only the first N characters.")
    parser.add_argument("--num_time_strata", type=int, default=6, help="Strata over t (a multiple of num_blocks).")
    parser.add_argument("--num_replicates", type=int, default=2, help="Independent estimates per window (>= 2).")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    pipeline = DiffusionBlocksTextPipeline.from_pretrained(args.model_path)
    model = pipeline.transformer.to(args.device).eval()
    text = load_text_corpus(args.dataset, args.split, args.text_column)
    if args.max_characters:
        text = text[: args.max_characters]
    started = time.perf_counter()
    estimate = estimate_nelbo(
        model, pipeline.tokenizer, text, args.sequence_length, args.num_time_strata, args.num_replicates,
        args.batch_size, args.seed, progress=True,
    )
    results = {
        "model_path": args.model_path,
        "dataset": args.dataset,
        "split": args.split,
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
                results["xz_bits_per_character"], estimate.num_characters, args.dataset, args.split)
    for stratum in results["strata"]:   # where the bits go: one line per interval of masking times
        logger.info("  t in [%.3f, %.3f] (block %d): %.4f ± %.4f bits/char", stratum["t_low"], stratum["t_high"],
                    stratum["block_index"], stratum["bits_per_character"], stratum["bits_per_character_standard_error"])
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
