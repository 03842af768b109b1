"""Model evaluation: the masked diffusion LM's NELBO and bits per character; the denoising loss of a
continuous-noise denoiser split over σ intervals."""

from pathlib import Path

from .bits_per_character import (
    NELBOEstimate,
    TimeStratumEstimate,
    estimate_nelbo,
    estimate_sequence_nelbo,
    estimate_sequence_nelbo_by_stratum,
    text_windows,
    time_strata,
)
from .denoising_loss import (
    DenoisingLossEstimate,
    IntervalLossEstimate,
    estimate_denoising_loss,
    estimate_denoising_loss_difference,
    estimate_image_denoising_losses_by_stratum,
    interval_strata,
    summarize_denoising_losses,
)


def bits_per_character_metric_path() -> str:
    """Folder of the `bits_per_character` evaluate module: `evaluate.load(bits_per_character_metric_path())`."""
    return str(Path(__file__).resolve().parent.parent / "metrics" / "bits_per_character")


__all__ = [
    "DenoisingLossEstimate",
    "IntervalLossEstimate",
    "NELBOEstimate",
    "TimeStratumEstimate",
    "bits_per_character_metric_path",
    "estimate_denoising_loss",
    "estimate_denoising_loss_difference",
    "estimate_image_denoising_losses_by_stratum",
    "estimate_nelbo",
    "estimate_sequence_nelbo",
    "estimate_sequence_nelbo_by_stratum",
    "interval_strata",
    "summarize_denoising_losses",
    "text_windows",
    "time_strata",
]
