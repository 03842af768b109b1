"""Classifying a whole image set with a DiffusionBlocks ViT, and where its `evaluate` accuracy module lives."""

from __future__ import annotations

from pathlib import Path

import torch

from .modeling_vit import DiffusionBlocksForImageClassification


def accuracy_metric_path() -> str:
    """Folder of the packaged `evaluate` accuracy module: `evaluate.load(accuracy_metric_path())` works offline."""
    return str(Path(__file__).resolve().parents[2] / "metrics" / "accuracy")


@torch.no_grad()
def predict_labels(
    model: DiffusionBlocksForImageClassification,
    images: torch.Tensor,
    batch_size: int = 500,
    num_inference_steps: int | None = None,
    seed: int | None = None,
) -> torch.LongTensor:
    """Argmax labels `(N,)` of `images` `(N, C, H, W)`, in batches on the model's device.

    By default every trajectory starts at ε = 0 and ends at the posterior's mode. With `seed`, the
    initial noise ε of all images is drawn at once from a CPU generator seeded with `seed` (labels
    sampled from the posterior), so the result depends neither on the device nor on `batch_size`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    model.eval()
    device = next(model.parameters()).device
    shape = (len(images), model.config.label_embedding_dim)
    noise = torch.zeros(shape) if seed is None else torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    predictions = []
    for start in range(0, len(images), batch_size):
        pixel_values = images[start : start + batch_size].to(device)
        batch_noise = noise[start : start + batch_size]
        logits = model(pixel_values, num_inference_steps=num_inference_steps, initial_noise=batch_noise).logits
        predictions.append(logits.argmax(dim=-1).cpu())
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
