"""Training objectives of the ViT classifier: block b's label-denoising loss, and the baseline's cross-entropy.

Block b (DiffusionBlocks, Eq. 6 with a discrete target): draw σ from p_noise restricted to the
block's overlap-extended interval, noise the label embedding z = E_y + σε, run block b alone, and
score its readout with either
- `"cross_entropy"` (default): CE(logits, y), unweighted. The readout is a posterior over classes, and
  CE trains that posterior directly; D̂ = softmax(logits)·E is then the MMSE denoiser. CE has no
  σ-dependent scale to normalise, so λ(σ) is not applied (λ spans 4 to 2.5e5 and would hand almost
  all the weight to low σ, where z already names the class);
- `"weighted_l2"`: λ(σ)·‖D̂ − E_y‖², the EDM loss (docs/method.md, 'Loss weight') on D̂ = softmax(logits)·E.
Cross-entropy gave the higher test accuracy when both were measured (docs/results/vit.md), hence the
default.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ...partition import NoisePartition
from ...preconditioning import EDMPreconditioning, add_noise

LABEL_OBJECTIVES = ("cross_entropy", "weighted_l2")


class LabelDenoisingLoss:
    """E_{σ ~ p_noise|block b, ε} [ loss(readout_b(x, E_y + σε, σ), y) ].

    Args:
        noise_partition (`NoisePartition`): the partition the model was configured with.
        preconditioning (`EDMPreconditioning`): the EDM coefficients (σ_data).
        objective (`"cross_entropy" | "weighted_l2"`, defaults to `"cross_entropy"`): see the module docstring.
    """

    def __init__(
        self,
        noise_partition: NoisePartition,
        preconditioning: EDMPreconditioning,
        objective: Literal["cross_entropy", "weighted_l2"] = "cross_entropy",
    ):
        if objective not in LABEL_OBJECTIVES:
            raise ValueError(f"objective must be one of {list(LABEL_OBJECTIVES)}, got {objective!r}.")
        self.noise_partition = noise_partition
        self.preconditioning = preconditioning
        self.objective = objective

    def __call__(
        self,
        model,
        block_index: int,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """`pixel_values` `(batch, C, H, W)`, `labels` `(batch,)` → scalar loss of block `block_index`."""
        target = model.label_embeddings[labels]                                            # (batch, d)
        sigma = self.noise_partition.sample_training_sigmas(block_index, target.shape[0], generator).to(target.device)
        noise = torch.randn(target.shape, generator=generator).to(target.device)
        output = model.forward_block(block_index, pixel_values, add_noise(target, noise, sigma), sigma)
        if self.objective == "cross_entropy":
            return F.cross_entropy(output.logits.float(), labels)
        return self.preconditioning.weighted_l2_loss(output.denoised, target, sigma)


def classification_training_loss(
    model, block_index: int, pixel_values: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
    objective: Literal["cross_entropy", "weighted_l2"] = "cross_entropy",
) -> torch.Tensor:
    """The loss that trains block `block_index` of `model`: the baseline's cross-entropy of its single
    pass (`classifier_type="standard"`), or `LabelDenoisingLoss` (`"diffusion"`)."""
    config = model.config
    if config.classifier_type == "standard":
        return F.cross_entropy(model.standard_logits(pixel_values).float(), labels)
    loss = LabelDenoisingLoss(config.noise_partition, config.preconditioning, objective)
    return loss(model, block_index, pixel_values, labels, generator)
