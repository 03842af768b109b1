#!/usr/bin/env python
"""Build a small diffusers `DiTPipeline` locally (no Hub): the source model of the pretrained path, to try it offline.

    python examples/make_tiny_dit_pipeline.py --output_dir dit-pipeline
    hf-diffusionblocks encode dit-pipeline latents.safetensors --dataset_name digits
    hf-diffusionblocks convert dit-pipeline converted --num_blocks 3

The pipeline has diffusers' own components, saved as `DiTPipeline.save_pretrained` writes them: a
`DiTTransformer2DModel` (learned variance, a null class for guidance), a `DDIMScheduler` and an
`AutoencoderKL`. The VAE is a small randomly initialised one that keeps the image size (one
resolution level), standing in for a trained VAE; the transformer is pretrained here with the DDPM
ε-objective on the digits encoded by that VAE, so that a converted model starts from a model that
has learnt something. It is a stand-in for `facebook/DiT-XL-2-256`: every later command is the one
you would run on the real pipeline.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

from hf_diffusionblocks.argument_checks import check_number
from hf_diffusionblocks.atomic_io import atomic_folder
from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.smoke import apply_smoke_caps
from hf_diffusionblocks.training.runtime import run_script, setup_logging

logger = logging.getLogger("make_tiny_dit_pipeline")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=type(
        "HelpFormatter", (argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter), {}))
    parser.add_argument("--output_dir", required=True, help="the pipeline folder to write (must not exist, or be empty)")
    parser.add_argument("--dataset_name", default="digits", help="the labelled images the transformer is pretrained on")
    parser.add_argument("--num_layers", type=int, default=6, help="transformer layers (a conversion takes at most this many blocks)")
    parser.add_argument("--num_attention_heads", type=int, default=4, help="attention heads")
    parser.add_argument("--attention_head_dim", type=int, default=16, help="width of each head")
    parser.add_argument("--patch_size", type=int, default=2, help="side of a latent patch; must divide the image side")
    parser.add_argument("--max_train_steps", type=int, default=200, help="pretraining steps of the transformer (0: random weights)")
    parser.add_argument("--train_batch_size", type=int, default=128, help="latents per pretraining step")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation, the batches and the noise")
    args = parser.parse_args(argv)
    for name in ("num_layers", "num_attention_heads", "attention_head_dim", "patch_size", "train_batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.max_train_steps < 0:
        raise ValueError(f"--max_train_steps must be >= 0, got {args.max_train_steps}.")
    check_number(args.learning_rate, "--learning_rate", 0, minimum_exclusive=True)
    if os.path.exists(args.output_dir) and (not os.path.isdir(args.output_dir) or os.listdir(args.output_dir)):
        raise ValueError(f"--output_dir {args.output_dir!r} already exists and is not an empty folder.")
    apply_smoke_caps(args)
    return args


def build_pipeline(args: argparse.Namespace, image_size: int, num_classes: int) -> DiTPipeline:
    torch.manual_seed(args.seed)
    if image_size % args.patch_size:
        raise ValueError(f"--patch_size {args.patch_size} does not divide the image side {image_size}.")
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(32,), layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=image_size,
    )
    transformer = DiTTransformer2DModel(
        num_attention_heads=args.num_attention_heads, attention_head_dim=args.attention_head_dim, in_channels=4,
        out_channels=8, num_layers=args.num_layers, sample_size=image_size, patch_size=args.patch_size,
        num_embeds_ada_norm=max(num_classes, 1000),  # DiTPipeline's null class (guidance) is label 1000
    )
    id2label = {index: str(index) for index in range(num_classes)}
    pipeline = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(), id2label=id2label)
    pipeline.register_to_config(id2label=id2label)  # saved in model_index.json: get_label_ids works after loading
    return pipeline


def pretrain(pipeline: DiTPipeline, images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace) -> None:
    """DDPM ε-prediction on the VAE's latents (the variance half of the output is left as initialised)."""
    vae, transformer, scheduler = pipeline.vae, pipeline.transformer, pipeline.scheduler
    with torch.no_grad():
        latents = vae.encode(images.expand(-1, 3, -1, -1)).latent_dist.mean * vae.config.scaling_factor
    alphas = scheduler.alphas_cumprod
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.learning_rate)
    generator = torch.Generator().manual_seed(args.seed)
    transformer.train()
    for step in range(args.max_train_steps):
        rows = torch.randint(0, latents.shape[0], (args.train_batch_size,), generator=generator)
        timesteps = torch.randint(0, len(alphas), (len(rows),), generator=generator)
        noise = torch.randn(latents[rows].shape, generator=generator)
        alpha = alphas[timesteps].view(-1, 1, 1, 1)
        noisy = alpha.sqrt() * latents[rows] + (1 - alpha).sqrt() * noise
        prediction = transformer(noisy, timestep=timesteps, class_labels=labels[rows]).sample[:, :4]
        loss = torch.nn.functional.mse_loss(prediction, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.max_train_steps - 1:
            logger.info("step %d/%d: loss %.4f", step + 1, args.max_train_steps, loss.item())
    transformer.eval()


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    setup_logging()
    dataset = load_image_dataset(args.dataset_name, "train")
    pipeline = build_pipeline(args, dataset.image_size, int(dataset.labels.max()) + 1)
    pretrain(pipeline, dataset.images, dataset.labels, args)
    with atomic_folder(args.output_dir) as staging:
        pipeline.save_pretrained(staging, safe_serialization=True)
    logger.info("written: %s (a DiTPipeline: transformer/, vae/, scheduler/, model_index.json)", args.output_dir)
    return args.output_dir


if __name__ == "__main__":
    run_script(main)
