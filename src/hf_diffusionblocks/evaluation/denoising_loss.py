"""The EDM-weighted denoising loss of a continuous-noise denoiser, split over the σ intervals of a partition.

Where does a model lose? Its training objective, L = E_{σ ~ p_noise} E_{y, ε} [λ(σ)·mean‖D(y + σε, σ, c) − y‖²],
is a sum over any partition of the noise range: L = Σ_k P(σ ∈ I_k)·L_k with L_k = E[· | σ ∈ I_k]. With
the block intervals of a block-wise model as the I_k, L_k says how well block k denoises its own range,
and the same split of an end-to-end model says how well the undivided network does there.

Estimator. Interval I_k = [lo_k, hi_k] of `partition` is cut into M = `strata_per_interval` sub-strata of
equal probability mass (equal cells of the log-normal CDF). One replicate draws, for every image and
every sub-stratum, one σ from p_noise restricted to the sub-stratum and one ε, and evaluates the model
there (the model routes σ to the block that owns it, as in sampling). L_k is the mean over its
sub-strata (they have equal mass), its share of L is P(I_k)·L_k, and the shares add up to L.

Common random numbers: every σ and ε comes from one CPU generator seeded with `seed`, drawn for all
images at once, stratum by stratum, so the draws depend only on the number and shape of the images,
the partition, M, the number of replicates and the seed, never on the model or on `batch_size`. Two
models evaluated with the same arguments see the same noisy inputs, and their difference is far less
noisy than either loss.

Standard errors treat the images as independent draws of the data: per image, the replicates are
averaged, and the error of a mean over images is their standard deviation over √n.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from ..argument_checks import check_integer
from ..partition import NoisePartition
from ..preconditioning import EDMPreconditioning, add_noise


@dataclass
class IntervalLossEstimate:
    """The denoising loss on one σ interval.

    Args:
        interval_index (`int`): k; interval 0 holds the highest noise (block 0 of a block-wise model).
        sigma_low, sigma_high (`float`): the interval [lo_k, hi_k].
        probability_mass (`float`): P(σ ∈ I_k) under the truncated log-normal p_noise.
        conditional_loss, conditional_standard_error (`float`): L_k = E[λ(σ)·mean‖D − y‖² | σ ∈ I_k].
        share, share_standard_error (`float`): P(I_k)·L_k, the interval's part of the total loss.
    """

    interval_index: int
    sigma_low: float
    sigma_high: float
    probability_mass: float
    conditional_loss: float
    conditional_standard_error: float
    share: float
    share_standard_error: float


@dataclass
class DenoisingLossEstimate:
    """The EDM-weighted denoising loss of a model and its split over the intervals of a partition.

    Args:
        loss, standard_error (`float`): L = Σ_k share_k over p_noise, and its standard error.
        num_images, num_replicates, strata_per_interval, seed (`int`): the estimator's settings.
        partition (`str`), num_intervals (`int`): the partition the loss is split over.
        sigma_data (`float`): σ_data of the loss weight λ(σ) = (σ² + σ_data²) / (σ·σ_data)².
        intervals (`list[IntervalLossEstimate]`): one per interval, highest noise first.
    """

    loss: float
    standard_error: float
    num_images: int
    num_replicates: int
    strata_per_interval: int
    seed: int
    partition: str
    num_intervals: int
    sigma_data: float
    intervals: list[IntervalLossEstimate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def format_table(self) -> str:
        """A plain-text table, one row per interval and one for the total."""
        lines = [f"{'interval':>8}  {'sigma range':>19}  {'mass':>6}  {'loss in interval':>18}  {'share of total':>16}"]
        for row in self.intervals:
            lines.append(
                f"{row.interval_index:>8}  {row.sigma_low:>8.4g} – {row.sigma_high:<8.4g}  {row.probability_mass:>6.3f}  "
                f"{row.conditional_loss:>9.4f} ± {row.conditional_standard_error:<6.4f}  "
                f"{row.share:>7.4f} ± {row.share_standard_error:<6.4f}"
            )
        lines.append(f"{'total':>8}  {'':>19}  {1.0:>6.3f}  {'':>18}  {self.loss:>7.4f} ± {self.standard_error:<6.4f}")
        return "\n".join(lines)


def interval_strata(partition: NoisePartition, strata_per_interval: int) -> list[tuple[int, float, float]]:
    """(interval_index, low, high) of every sub-stratum, from σ_max down: each interval of `partition` cut
    into `strata_per_interval` equal cells of the CDF of p_noise."""
    strata_per_interval = check_integer(strata_per_interval, "strata_per_interval", minimum=1)
    strata = []
    for interval_index in range(partition.num_blocks):
        low, high = partition.block_interval(interval_index)
        cdf_low, cdf_high = partition.sigma_to_cdf(low), partition.sigma_to_cdf(high)
        fractions = torch.linspace(0.0, 1.0, strata_per_interval + 1, dtype=torch.float64)
        edges = partition.cdf_to_sigma(cdf_low + fractions * (cdf_high - cdf_low))
        edges[0], edges[-1] = low, high  # the interval's own ends, exactly
        # highest noise first, as the intervals are
        strata += [(interval_index, float(edges[j - 1]), float(edges[j])) for j in range(strata_per_interval, 0, -1)]
    return strata


def _check_inputs(model, images, class_labels, partition, num_replicates, batch_size) -> None:
    if not isinstance(partition, NoisePartition):
        raise TypeError(f"partition must be a NoisePartition, got {type(partition).__name__}.")
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim < 2:
        raise ValueError("images must be a floating tensor of shape (num_images, ...), "
                         f"got {type(images).__name__} {tuple(getattr(images, 'shape', ()))}.")
    if images.shape[0] < 2:
        raise ValueError(f"images must hold at least 2 images (the standard error needs 2), got {images.shape[0]}.")
    if class_labels is not None and (not isinstance(class_labels, torch.Tensor) or class_labels.shape != images.shape[:1]):
        raise ValueError(f"class_labels must be None or a tensor of shape ({images.shape[0]},), "
                         f"got {tuple(getattr(class_labels, 'shape', ())) or class_labels!r}.")
    check_integer(num_replicates, "num_replicates", minimum=1)
    check_integer(batch_size, "batch_size", minimum=1)
    if not getattr(model, "is_complete", True):
        raise ValueError(f"the denoising loss needs every block; loaded blocks: {model.loaded_block_indices}.")
    model_partition = getattr(getattr(model, "config", None), "noise_partition", None)
    if model_partition is not None and (
        partition.sigma_min < model_partition.sigma_min * (1 - 1e-6) or partition.sigma_max > model_partition.sigma_max * (1 + 1e-6)
    ):
        raise ValueError(
            f"partition covers σ in [{partition.sigma_min}, {partition.sigma_max}], outside the model's "
            f"[{model_partition.sigma_min}, {model_partition.sigma_max}]."
        )


@torch.no_grad()
def estimate_image_denoising_losses_by_stratum(
    model,
    images: torch.Tensor,
    partition: NoisePartition,
    class_labels: torch.Tensor | None = None,
    preconditioning: EDMPreconditioning | None = None,
    strata_per_interval: int = 4,
    num_replicates: int = 2,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """λ(σ)·mean‖D − y‖² of every image at every sub-stratum's σ, float64 `(num_images, num_replicates, num_strata)`.

    Stratum s is `interval_strata(partition, strata_per_interval)[s]`; the arguments are those of
    `estimate_denoising_loss`, and so are the draws (module docstring).
    """
    _check_inputs(model, images, class_labels, partition, num_replicates, batch_size)
    preconditioning = preconditioning or model.config.preconditioning
    strata = interval_strata(partition, strata_per_interval)
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    device = parameter.device if parameter is not None else images.device
    generator = torch.Generator().manual_seed(seed)
    num_images = images.shape[0]
    losses = torch.zeros(num_images, num_replicates, len(strata), dtype=torch.float64)
    for replicate in range(num_replicates):
        for stratum_index, (_, low, high) in enumerate(strata):
            # All images' draws at once, before any model call: they cannot depend on the model or the batch size.
            sigmas = partition.sample_sigmas_between(low, high, num_images, generator).to(images.dtype)
            noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
            for start in range(0, num_images, batch_size):
                chunk = slice(start, start + batch_size)
                target, sigma = images[chunk].to(device), sigmas[chunk].to(device)
                noisy = add_noise(target, noise[chunk].to(device), sigma)
                labels = None if class_labels is None else class_labels[chunk].to(device)
                denoised = model(noisy, sigma, class_labels=labels).sample
                squared_error = (denoised.double() - target.double()).pow(2).flatten(1).mean(dim=1)
                weighted = preconditioning.loss_weight(sigma.double()) * squared_error
                losses[chunk, replicate, stratum_index] = weighted.cpu()
    return losses


def estimate_denoising_loss(
    model,
    images: torch.Tensor,
    partition: NoisePartition,
    class_labels: torch.Tensor | None = None,
    preconditioning: EDMPreconditioning | None = None,
    strata_per_interval: int = 4,
    num_replicates: int = 2,
    seed: int = 0,
    batch_size: int = 256,
) -> DenoisingLossEstimate:
    """The EDM-weighted denoising loss of `model` on `images`, split over the intervals of `partition`.

    Args:
        model: called as `model(noisy, sigma, class_labels=labels)` and returning an output whose `sample`
            is D(z, σ) (e.g. a `DiffusionBlocksDiTModel` with every block, which routes σ to its owner
            block, or with one block for an end-to-end model); evaluated on its parameters' device.
        images (`torch.Tensor` of shape `(num_images, ...)`): clean data in the model's range ([-1, 1]).
        partition (`NoisePartition`): the intervals I_k (its `num_blocks`, `partition` and the
            log-normal p_noise); its overlap is ignored. Pass the block-wise model's partition to
            split both models over its blocks; its σ range must lie inside the model's.
        class_labels (`torch.LongTensor` of shape `(num_images,)`, *optional*): conditioning labels
            (None: the model's null label).
        preconditioning (`EDMPreconditioning`, *optional*): σ_data of the loss weight; defaults to the model's.
        strata_per_interval (`int`, defaults to 4): sub-strata M of equal mass per interval.
        num_replicates (`int`, defaults to 2): independent σ and ε draws per image and sub-stratum.
        seed (`int`, defaults to 0): the estimate is a deterministic function of it (module docstring).
        batch_size (`int`, defaults to 256): images per model call; does not change the estimate.
    """
    losses = estimate_image_denoising_losses_by_stratum(
        model, images, partition, class_labels, preconditioning, strata_per_interval, num_replicates, seed, batch_size
    )
    sigma_data = (preconditioning or model.config.preconditioning).sigma_data
    return summarize_denoising_losses(losses, partition, seed, sigma_data)


def estimate_denoising_loss_difference(
    model,
    reference_model,
    images: torch.Tensor,
    partition: NoisePartition,
    class_labels: torch.Tensor | None = None,
    preconditioning: EDMPreconditioning | None = None,
    strata_per_interval: int = 4,
    num_replicates: int = 2,
    seed: int = 0,
    batch_size: int = 256,
) -> DenoisingLossEstimate:
    """The loss of `model` minus that of `reference_model`, per interval, with paired standard errors.

    Both see the same σ and ε (module docstring), so the error of the difference is that of the
    per-image differences, usually far below either loss's own error. Arguments as in
    `estimate_denoising_loss`; `preconditioning` defaults to `model`'s (both should share σ_data).
    """
    arguments = (images, partition, class_labels, preconditioning, strata_per_interval, num_replicates, seed, batch_size)
    losses = estimate_image_denoising_losses_by_stratum(model, *arguments)
    reference = estimate_image_denoising_losses_by_stratum(reference_model, *arguments)
    sigma_data = (preconditioning or model.config.preconditioning).sigma_data
    return summarize_denoising_losses(losses - reference, partition, seed, sigma_data)


def summarize_denoising_losses(
    losses: torch.Tensor, partition: NoisePartition, seed: int, sigma_data: float
) -> DenoisingLossEstimate:
    """Interval losses, shares and standard errors from `estimate_image_denoising_losses_by_stratum`'s tensor
    `(num_images, num_replicates, num_intervals · strata_per_interval)` (or a difference of two)."""
    if not isinstance(losses, torch.Tensor) or losses.ndim != 3 or losses.shape[0] < 2:
        raise ValueError("losses must be a tensor of shape (num_images >= 2, num_replicates, num_strata), "
                         f"got {tuple(getattr(losses, 'shape', ())) or type(losses).__name__}.")
    num_images, num_replicates, num_strata = losses.shape
    if num_strata % partition.num_blocks:
        raise ValueError(f"losses has {num_strata} strata, not a multiple of the partition's {partition.num_blocks} intervals.")
    strata_per_interval = num_strata // partition.num_blocks
    per_image = losses.mean(dim=1)                                                  # (n, K·M)
    conditional = per_image.reshape(num_images, partition.num_blocks, strata_per_interval).mean(dim=2)  # (n, K)
    masses = torch.stack([
        partition.probability_mass(*partition.block_interval(k)) for k in range(partition.num_blocks)
    ]).double()
    shares = conditional * masses                                                   # (n, K)
    total = shares.sum(dim=1)                                                       # (n,)

    def standard_error(values: torch.Tensor) -> torch.Tensor:
        return values.std(dim=0, unbiased=True) / math.sqrt(num_images)

    conditional_errors, share_errors = standard_error(conditional), standard_error(shares)
    intervals = []
    for k in range(partition.num_blocks):
        low, high = partition.block_interval(k)
        intervals.append(IntervalLossEstimate(
            interval_index=k, sigma_low=low, sigma_high=high, probability_mass=float(masses[k]),
            conditional_loss=float(conditional[:, k].mean()), conditional_standard_error=float(conditional_errors[k]),
            share=float(shares[:, k].mean()), share_standard_error=float(share_errors[k]),
        ))
    return DenoisingLossEstimate(
        loss=float(total.mean()), standard_error=float(standard_error(total)), num_images=num_images,
        num_replicates=num_replicates, strata_per_interval=strata_per_interval, seed=seed,
        partition=partition.partition, num_intervals=partition.num_blocks,
        sigma_data=sigma_data, intervals=intervals,
    )
