#!/usr/bin/env python
"""Test accuracy of trained ViT classifiers (block-wise and end to end), for several inference settings.

    python examples/evaluate_vit.py --model blockwise=outputs/vit-blockwise --model end_to_end=outputs/vit-e2e \\
        --dataset_name fashion_mnist --num_inference_steps 3 6 --noise_seeds 0 1

For a DiffusionBlocks classifier, every `--num_inference_steps` value is evaluated twice over:
starting the label ODE at ε = 0 (the default of the model: the trajectory ends at the posterior's
mode) and at σ_max·ε for each `--noise_seeds` seed (labels sampled from the posterior). A standard
(end-to-end) classifier is one forward pass. Accuracy comes from the packaged `evaluate` accuracy
module; the table is printed and written to `--output_file` as JSON.
"""

from __future__ import annotations

import argparse
import logging
import time

import evaluate
import torch

from hf_diffusionblocks import DiffusionBlocksForImageClassification
from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.atomic_io import atomic_write_json
from hf_diffusionblocks.models.vit.evaluation_vit import accuracy_metric_path, predict_labels
from hf_diffusionblocks.training.arguments import HelpFormatter
from hf_diffusionblocks.training.runtime import configure_cpu_threads, run_script, setup_logging

logger = logging.getLogger("evaluate_vit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="A model folder (or Hub repo) written by train_vit.py, with a name for the table; repeatable.")
    parser.add_argument("--dataset_name", "--dataset", dest="dataset_name", default="fashion_mnist", help="The dataset the models were trained on.")
    parser.add_argument("--split", default="test", help="The split evaluated.")
    parser.add_argument("--image_column", default=None, help="Image column of a `datasets` dataset (None: the first image column).")
    parser.add_argument("--label_column", default=None, help="Label column of a `datasets` dataset (None: the first class-label column).")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Evaluate the first N images (default: all).")
    parser.add_argument("--num_inference_steps", type=int, nargs="+", default=None,
                        help="Euler steps of the diffusion classifiers (default: one per block).")
    parser.add_argument("--noise_seeds", type=int, nargs="*", default=[0],
                        help="Seeds of the random starts σ_max·ε (none: only the ε = 0 start).")
    parser.add_argument("--batch_size", type=int, default=1000, help="Images per forward pass.")
    parser.add_argument("--output_file", default="vit_accuracy.json", help="JSON file the accuracies are written to.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Device that evaluates (default: cuda when available).")
    args = parser.parse_args(argv)
    for entry in args.model:
        if "=" not in entry or not entry.split("=", 1)[0] or not entry.split("=", 1)[1]:
            parser.error(f"--model takes NAME=PATH, got {entry!r}.")
    if args.num_inference_steps is not None and min(args.num_inference_steps) < 1:
        parser.error(f"--num_inference_steps must be >= 1, got {args.num_inference_steps}.")
    return args


def settings_of(model: DiffusionBlocksForImageClassification, args: argparse.Namespace) -> list[dict]:
    """The inference settings to evaluate: one pass for a standard classifier, steps × starts otherwise."""
    if model.config.classifier_type == "standard":
        return [{"num_inference_steps": None, "start": "one pass", "seed": None}]
    steps = args.num_inference_steps or [model.config.num_blocks]
    starts = [("zero", None)] + [("noise", seed) for seed in args.noise_seeds]
    return [{"num_inference_steps": s, "start": start, "seed": seed} for s in steps for start, seed in starts]


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    setup_logging()
    configure_cpu_threads(torch.device(args.device).type)
    test_set = load_image_dataset(args.dataset_name, args.split, args.image_column, args.label_column)
    images, labels = test_set.images, test_set.labels
    if args.max_eval_samples is not None:
        images, labels = images[: args.max_eval_samples], labels[: args.max_eval_samples]
    metric = evaluate.load(accuracy_metric_path())
    rows = []
    for entry in args.model:
        name, path = entry.split("=", 1)
        model = DiffusionBlocksForImageClassification.from_pretrained(path).to(args.device)
        for setting in settings_of(model, args):
            started = time.perf_counter()
            predictions = predict_labels(model, images, args.batch_size, setting["num_inference_steps"], seed=setting["seed"])
            accuracy = metric.compute(predictions=predictions.tolist(), references=labels.tolist())["accuracy"]
            row = {"name": name, "path": path, "num_blocks": model.config.num_blocks,
                   "training_steps": model.block_training_steps, **setting, "accuracy": accuracy,
                   "num_examples": len(labels), "seconds": time.perf_counter() - started}
            rows.append(row)
            logger.info("%s steps=%s start=%s seed=%s: accuracy %.4f", name, setting["num_inference_steps"],
                        setting["start"], setting["seed"], accuracy)
    atomic_write_json(args.output_file, {"dataset": args.dataset_name, "split": args.split, "results": rows})
    print(f"{'model':<16} {'B':>2} {'steps':>5} {'start':<9} {'accuracy':>8}  (n = {len(labels)})")
    for row in rows:
        start = row["start"] if row["seed"] is None else f"noise {row['seed']}"
        steps = "-" if row["num_inference_steps"] is None else row["num_inference_steps"]
        print(f"{row['name']:<16} {row['num_blocks']:>2} {steps:>5} {start:<9} {row['accuracy']:>8.2%}")
    return rows


if __name__ == "__main__":
    run_script(main)
