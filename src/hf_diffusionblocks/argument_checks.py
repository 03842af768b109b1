"""Checks of user-given arguments, written once: a `ValueError` naming the argument and what it accepts.

Configs, schedulers, pipelines, `generate` and the models' inference methods call these instead of
comparing values themselves. Plain comparisons let bad input through as silently wrong numbers:
NaN fails every comparison (so `not nan > 0` is the only safe form), `True` is an `int`, `2.5` steps
become `arange(2.5)` = 3 steps, and `float` labels are truncated by `.long()`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch


def _interval_text(
    minimum: float | None, maximum: float | None, minimum_exclusive: bool = False, maximum_exclusive: bool = False
) -> str:
    """`">= 1"`, `"> 0"`, `"<= 5"`, `"in [0, 1)"` or `""` (no bound): the accepted range, as the messages print it."""
    if minimum is not None and maximum is not None:
        return f"in {'(' if minimum_exclusive else '['}{minimum}, {maximum}{')' if maximum_exclusive else ']'}"
    if minimum is not None:
        return f"{'>' if minimum_exclusive else '>='} {minimum}"
    if maximum is not None:
        return f"{'<' if maximum_exclusive else '<='} {maximum}"
    return ""


def check_integer(
    value: Any, name: str, minimum: int | None = 1, maximum: int | None = None, *, allow_none: bool = False
) -> int | None:
    """`value` as an `int`; a `ValueError` naming `name` unless it is an integer in `[minimum, maximum]`
    (or None, with `allow_none`).

    Python and NumPy integers are accepted; bools, floats (even integral ones: `2.0` steps is a
    float where a count was meant) and strings are refused.
    """
    if allow_none and value is None:
        return None
    in_range = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if in_range:
        in_range = (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not in_range:
        allowed = f"an integer {_interval_text(minimum, maximum)}".rstrip()
        raise ValueError(f"{name} must be {'None or ' if allow_none else ''}{allowed}, got {value!r}.")
    return int(value)


def check_number(
    value: Any,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    minimum_exclusive: bool = False,
    maximum_exclusive: bool = False,
    hint: str = "",
) -> float:
    """`value` as a `float`; a `ValueError` naming `name` unless it is a finite real number in the range.

    Accepts Python and NumPy numbers and one-element tensors; refuses bools, NaN and ±infinity.
    `hint` ends the message (e.g. what to do instead).
    """
    number = None
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool and not value.is_complex():
        number = float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    accepted = number is not None and math.isfinite(number)
    if accepted and minimum is not None:
        accepted = number > minimum if minimum_exclusive else number >= minimum
    if accepted and maximum is not None:
        accepted = number < maximum if maximum_exclusive else number <= maximum
    if not accepted:
        interval = _interval_text(minimum, maximum, minimum_exclusive, maximum_exclusive)
        interval = f"{interval} (a finite number)" if interval else "a finite number"
        raise ValueError(f"{name} must be {interval}, got {value!r}{hint}.")
    return number


def check_values_in_range(
    values: torch.Tensor | float,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    minimum_exclusive: bool = False,
    range_text: str | None = None,
) -> None:
    """A `ValueError` naming `name` unless every element of `values` is finite and in `[minimum, maximum]`
    (`(minimum, maximum]` with `minimum_exclusive`; None: no bound). NaN and ±infinity are refused.

    `range_text` replaces the printed interval (e.g. `"[sigma_min=0.002, sigma_max=80.0]"`).
    """
    values = torch.as_tensor(values)
    accepted = torch.isfinite(values)
    if minimum is not None:
        accepted &= values > minimum if minimum_exclusive else values >= minimum
    if maximum is not None:
        accepted &= values <= maximum
    if bool(accepted.all()):
        return
    if values.is_floating_point() and bool(values.isnan().any()):
        got = "NaN"
    else:
        got = f"values in [{float(values.min())}, {float(values.max())}]"
    if range_text is not None or (minimum is not None and maximum is not None):
        interval = f"in {range_text}" if range_text else _interval_text(minimum, maximum, minimum_exclusive)
        raise ValueError(f"{name} must lie {interval}, got {got}.")
    interval = _interval_text(minimum, maximum, minimum_exclusive)
    raise ValueError(f"{name} must be finite{f' and {interval}' if interval else ''}, got {got}.")


def check_block_index(block_index: Any, num_blocks: int) -> int:
    """`block_index` when it is an int in `[0, num_blocks)`; a `ValueError` naming the valid range otherwise
    (bools, floats and out-of-range values alike)."""
    if not isinstance(block_index, int) or isinstance(block_index, bool) or not 0 <= block_index < num_blocks:
        raise ValueError(
            f"block_index must be an int in [0, {num_blocks - 1}] (num_blocks={num_blocks}), got {block_index!r}."
        )
    return block_index


def check_num_inference_steps(value: Any, num_blocks: int, name: str = "num_inference_steps") -> int:
    """The number of sampling steps as an `int`: an integer >= 1, and at least one step per block.

    With fewer steps than blocks the grid skips whole noise intervals, so some blocks (and their
    layers) never run and the sample is not the model's.
    """
    value = check_integer(value, name, minimum=1)
    if value < num_blocks:
        raise ValueError(
            f"{name}={value} is fewer than num_blocks={num_blocks}: some blocks would never run. Use an integer "
            f">= {num_blocks} (a multiple of {num_blocks} gives every block the same number of steps)."
        )
    return value


def as_integer_tensor(values: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> torch.Tensor:
    """`values` (an int, a sequence of ints or an integer tensor) as a `LongTensor`; a `ValueError` naming
    `name` for floats (which `.long()` would silently truncate), bools, other types or values outside
    `[minimum, maximum]`."""
    interval = f" {_interval_text(minimum, maximum)}".rstrip()
    try:
        tensor = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError):
        tensor = None
    if tensor is None or tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{name} must be integers{interval}, got {values!r}.")
    tensor = tensor.long()
    if tensor.numel() and (
        (minimum is not None and int(tensor.min()) < minimum) or (maximum is not None and int(tensor.max()) > maximum)
    ):
        raise ValueError(f"{name} must be integers{interval}, got {tensor.tolist()}.")
    return tensor
