#!/usr/bin/env python
"""Sample quality of a trained DiffusionBlocks DiT pipeline folder.

    python examples/evaluate_dit.py --pipeline outputs/dit-digits --dataset_name digits

Reports the Fréchet distance between generated images and the held-out test images, on the
features of a small classifier the library trains on the same dataset's training split (cached),
with as many samples per class as the test split has; and, with `--inception_path`, FID on a
user-supplied TorchScript Inception network (2048-d pool features). With `--fid`, the standard FID
(Inception-v3 2015-12-05 pool3, `pip install "hf-diffusionblocks[fid]"`) of `--fid_num_samples`
generated images against as many test images, with the test statistics cached. FID is biased
upward at small sample counts: compare FIDs only at equal `--fid_num_samples`. Also prints the
sampling cost (block evaluations and seconds per image). Writes `metrics.json` into the pipeline folder.

With `--denoising_loss_blocks B` it also estimates the EDM-weighted denoising loss on the first
`--denoising_loss_images` test images, split over the B intervals of a partition of the model's
noise range (`--denoising_loss_partition`), and prints it as a table: evaluated with the same B
and seed, a block-wise and an end-to-end model see the same σ draws and noise, so the table shows
in which interval of σ one loses to the other (`hf_diffusionblocks.evaluation.estimate_denoising_loss`).
`--denoising_loss_reference PIPELINE` adds this model's loss minus the reference's (e.g. the
end-to-end model), per interval, with paired standard errors. `--skip_frechet` computes only the loss (no sampling, no feature classifier).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import torch

from hf_diffusionblocks import DiffusionBlocksImagePipeline
from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.evaluation import DenoisingLossEstimate, estimate_denoising_loss, estimate_denoising_loss_difference
from hf_diffusionblocks.metrics import (
    FeatureClassifierTrainingArguments,
    FrechetClassifierDistance,
    FrechetInceptionDistance,
    InceptionFrechetDistance,
    find_fid_weights,
    load_or_train_feature_classifier,
)
from hf_diffusionblocks.atomic_io import atomic_write_json
from hf_diffusionblocks.training.arguments import HelpFormatter
from hf_diffusionblocks.training.runtime import configure_cpu_threads, run_script, setup_logging
from hf_diffusionblocks.partition import PARTITIONS, NoisePartition

logger = logging.getLogger("evaluate_dit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--pipeline", required=True, help="A pipeline folder (or Hub repo) written by train_dit.py.")
    parser.add_argument("--dataset_name", "--dataset", dest="dataset_name", default="digits", help="The dataset the model was trained on.")
    parser.add_argument("--image_column", default=None, help="Image column of a `datasets` dataset (None: the first image column).")
    parser.add_argument("--label_column", default=None, help="Label column of a `datasets` dataset (None: the first class-label column).")
    parser.add_argument("--num_inference_steps", type=int, default=48, help="Sampling steps of the generated images.")
    parser.add_argument("--guidance_scale", type=float, default=2.0, help="Classifier-free guidance weight of the generated images.")
    parser.add_argument("--samples_per_class", type=int, default=None,
                        help="Images generated per class for the classifier distance. Default: one per test image; "
                             "with --fid, the FID's images (the first --fid_num_samples test labels), sampled once.")
    parser.add_argument("--batch_size", type=int, default=500, help="Images per sampling batch.")
    parser.add_argument("--classifier_train_size", type=int, default=None,
                        help="Train the feature classifier on the first N training images (default: all).")
    parser.add_argument("--classifier_threads", type=int, default=1, help="CPU threads for training the feature classifier.")
    parser.add_argument("--inception_path", default=None, help="TorchScript Inception file for FID (optional).")
    parser.add_argument("--fid", action="store_true",
                        help="Also the standard FID (Inception-v3 2015-12-05 pool3; needs the `fid` extra), "
                             "with the test statistics cached. FID is biased upward at small N: compare only at equal N.")
    parser.add_argument("--fid_num_samples", type=int, default=2000,
                        help="Generated and test images for --fid (fewer if the test split has fewer).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sampling noise.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Device that samples (default: cuda when available).")
    parser.add_argument("--skip_frechet", action="store_true", help="No samples and no Fréchet distance.")
    loss = parser.add_argument_group("denoising loss by σ interval")
    loss.add_argument("--denoising_loss_blocks", type=int, default=0,
                      help="Split the denoising loss over this many σ intervals (0: do not estimate it).")
    loss.add_argument("--denoising_loss_partition", choices=PARTITIONS, default="equiprobable",
                      help="How the model's noise range is cut into those intervals.")
    loss.add_argument("--denoising_loss_images", type=int, default=1000, help="The first N test images.")
    loss.add_argument("--denoising_loss_strata", type=int, default=4, help="Sub-strata of σ per interval.")
    loss.add_argument("--denoising_loss_replicates", type=int, default=2, help="σ and noise draws per image and sub-stratum.")
    loss.add_argument("--denoising_loss_reference", default=None,
                      help="A second pipeline folder: also report this model's loss minus its (paired, same draws).")
    loss.add_argument("--denoising_loss_json", default=None,
                      help="Also write the loss (and the difference to the reference) to this JSON file.")
    args = parser.parse_args(argv)
    for name, minimum in (("denoising_loss_blocks", 0), ("denoising_loss_images", 2),
                          ("denoising_loss_strata", 1), ("denoising_loss_replicates", 1)):
        if getattr(args, name) < minimum:
            parser.error(f"--{name} must be >= {minimum}, got {getattr(args, name)}.")
    if args.fid_num_samples < 2:
        parser.error(f"--fid_num_samples must be >= 2, got {args.fid_num_samples}.")
    if args.fid:
        try:
            find_fid_weights()
        except FileNotFoundError as error:
            parser.error(f"--fid: {error}")
    if args.skip_frechet and not args.denoising_loss_blocks:
        parser.error("--skip_frechet leaves nothing to evaluate without --denoising_loss_blocks.")
    if args.denoising_loss_reference and not args.denoising_loss_blocks:
        parser.error("--denoising_loss_reference needs --denoising_loss_blocks.")
    return args


@torch.no_grad()
def generate(pipeline, labels: torch.Tensor, args: argparse.Namespace) -> tuple[torch.Tensor, float]:
    """Images in [-1, 1] for `labels`, and seconds per image."""
    generator = torch.Generator().manual_seed(args.seed)
    chunks, started = [], time.perf_counter()
    for start in range(0, len(labels), args.batch_size):
        images = pipeline(
            class_labels=labels[start : start + args.batch_size], guidance_scale=args.guidance_scale,
            num_inference_steps=args.num_inference_steps, generator=generator, output_type="pt",
        ).images
        chunks.append(images * 2 - 1)
    return torch.cat(chunks), (time.perf_counter() - started) / len(labels)


def layer_evaluations_per_image(pipeline, guidance_scale: float) -> int:
    """Transformer layers run per image by the last sampling call (×2 under classifier-free guidance)."""
    layers = pipeline.transformer.layers_per_block
    evaluations = sum(layers[block] for block in pipeline.scheduler.block_indices.tolist())
    return evaluations * (2 if guidance_scale > 1 else 1)


def class_balanced_labels(test_labels: torch.Tensor, num_labels: int, samples_per_class: int | None) -> torch.Tensor:
    if samples_per_class is None:
        return test_labels.clone()
    return torch.arange(num_labels).repeat_interleave(samples_per_class)


def denoising_loss_by_interval(pipeline, test_set, args: argparse.Namespace, reference=None) -> DenoisingLossEstimate:
    """The denoising loss of the pipeline's transformer on the first test images, split over
    `--denoising_loss_blocks` intervals of its own noise distribution (overlap plays no part);
    with a `reference` transformer, the loss minus the reference's on the same draws."""
    model_partition = pipeline.transformer.config.noise_partition
    partition = NoisePartition(
        num_blocks=args.denoising_loss_blocks, partition=args.denoising_loss_partition, overlap=0.0,
        sigma_min=model_partition.sigma_min, sigma_max=model_partition.sigma_max,
        p_mean=model_partition.p_mean, p_std=model_partition.p_std,
    )
    count = min(args.denoising_loss_images, len(test_set.labels))
    settings = dict(class_labels=test_set.labels[:count], strata_per_interval=args.denoising_loss_strata,
                    num_replicates=args.denoising_loss_replicates, seed=args.seed, batch_size=args.batch_size)
    if reference is not None:
        return estimate_denoising_loss_difference(
            pipeline.transformer.eval(), reference.eval(), test_set.images[:count], partition, **settings
        )
    return estimate_denoising_loss(pipeline.transformer.eval(), test_set.images[:count], partition, **settings)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    configure_cpu_threads(torch.device(args.device).type)
    pipeline = DiffusionBlocksImagePipeline.from_pretrained(args.pipeline).to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    config = pipeline.transformer.config
    train_set = load_image_dataset(args.dataset_name, "train", args.image_column, args.label_column, config.image_size)
    test_set = load_image_dataset(args.dataset_name, "test", args.image_column, args.label_column, config.image_size)
    if train_set.num_labels != config.num_labels:
        raise ValueError(f"--dataset_name {args.dataset_name} has {train_set.num_labels} classes, the model {config.num_labels}.")

    results = {
        "pipeline": args.pipeline,
        "dataset": args.dataset_name,
        "num_blocks": config.num_blocks,
        "partition": config.partition,
        "training_steps": pipeline.transformer.block_training_steps,
        "device": args.device,
    }
    loss = None
    if args.denoising_loss_blocks:
        loss = denoising_loss_by_interval(pipeline, test_set, args)
        results["denoising_loss"] = loss.to_dict()
    difference = None
    if args.denoising_loss_reference:
        reference = DiffusionBlocksImagePipeline.from_pretrained(args.denoising_loss_reference).to(args.device).transformer
        difference = denoising_loss_by_interval(pipeline, test_set, args, reference)
        results["denoising_loss_difference"] = {"reference": args.denoising_loss_reference, **difference.to_dict()}
    if args.denoising_loss_json:
        atomic_write_json(args.denoising_loss_json, {key: value for key, value in results.items() if key.startswith("denoising_loss")})
    if not args.skip_frechet:
        results.update(frechet_results(pipeline, train_set, test_set, args))
    if os.path.isdir(args.pipeline) and not args.skip_frechet:  # a loss-only run keeps the folder's earlier metrics
        atomic_write_json(os.path.join(args.pipeline, "metrics.json"), results)
    print(json.dumps(results, indent=2))
    if loss is not None:
        print(f"denoising loss by σ interval ({loss.num_intervals} {loss.partition} intervals, {loss.num_images} test images, "
              f"{loss.strata_per_interval} strata × {loss.num_replicates} replicates, seed {loss.seed}):")
        print(loss.format_table())
    if difference is not None:
        print(f"minus the reference {args.denoising_loss_reference} (paired: the same draws):")
        print(difference.format_table())
    return results


def frechet_results(pipeline, train_set, test_set, args: argparse.Namespace) -> dict:
    """Fréchet distance of generated images to the test images on the library's feature classifier (and Inception)."""
    config = pipeline.transformer.config
    size = args.classifier_train_size or len(train_set.labels)
    classifier = load_or_train_feature_classifier(
        train_set.images[:size], train_set.labels[:size], train_set.num_labels,
        FeatureClassifierTrainingArguments(num_threads=args.classifier_threads),
    )
    if args.fid and args.samples_per_class is None:  # one set of images serves both distances
        labels = test_set.labels[: min(args.fid_num_samples, len(test_set.labels))].clone()
    else:
        labels = class_balanced_labels(test_set.labels, config.num_labels, args.samples_per_class)
    generated, seconds_per_image = generate(pipeline, labels, args)
    metric = FrechetClassifierDistance(classifier)
    results = {
        "num_generated": len(generated),
        "num_reference": len(test_set.images),
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "frechet_classifier_distance": metric.compute(test_set.images, generated),
        "classifier_accuracy": classifier.held_out_accuracy,
        "classifier_train_size": size,
        "layer_evaluations_per_image": layer_evaluations_per_image(pipeline, args.guidance_scale),
        "seconds_per_image": seconds_per_image,
    }
    if args.inception_path:
        results["fid_inception"] = InceptionFrechetDistance(args.inception_path, device=args.device).compute(test_set.images, generated)
    if args.fid:
        count = min(args.fid_num_samples, len(test_set.labels))  # generated labels = the test labels, image for image
        if not torch.equal(labels[:count], test_set.labels[:count]):
            generated = generate(pipeline, test_set.labels[:count], args)[0]
        metric = FrechetInceptionDistance(device=args.device)
        reference = metric.reference_statistics(test_set.images[:count], args.dataset_name, "test")
        results.update(fid=metric.compute_from_statistics(generated[:count], reference), fid_num_samples=count)
    return results


if __name__ == "__main__":
    run_script(main)
