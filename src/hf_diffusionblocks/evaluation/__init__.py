"""Exact likelihood evaluation of the masked diffusion LM: NELBO and bits per character."""

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


def bits_per_character_metric_path() -> str:
    """Folder of the `bits_per_character` evaluate module: `evaluate.load(bits_per_character_metric_path())`."""
    return str(Path(__file__).resolve().parent.parent / "metrics" / "bits_per_character")


__all__ = [
    "NELBOEstimate",
    "TimeStratumEstimate",
    "bits_per_character_metric_path",
    "estimate_nelbo",
    "estimate_sequence_nelbo",
    "estimate_sequence_nelbo_by_stratum",
    "text_windows",
    "time_strata",
]
