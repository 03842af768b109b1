"""Smoke runs: `HF_DIFFUSIONBLOCKS_SMOKE=1` makes every script of the repository run at tiny settings.

The documentation's commands are executed by the tests (tests/test_docs_snippets.py) exactly as written;
with this environment variable set, the scripts cap their step counts and sizes so that every command
finishes in seconds and still writes the folder the next command loads. This module is the one place
that reads the variable and the one table of the caps: a cap only ever lowers a value (a flag given
below its cap, or left unset, is kept), and an argument a script does not have is ignored.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Mapping

SMOKE_ENVIRONMENT_VARIABLE = "HF_DIFFUSIONBLOCKS_SMOKE"

# argument name -> the largest value a smoke run uses (per-block lists are capped element-wise)
SMOKE_CAPS: Mapping[str, int] = {
    "max_train_steps": 2,
    "max_train_steps_per_block": 2,
    "train_batch_size": 16,
    "train_batch_size_per_block": 16,
    "lr_warmup_steps": 0,
    "samples_per_class": 1,
    "num_samples": 2,
    "sample_length": 32,
    "sample_new_tokens": 16,
    "eval_windows": 8,
    "validation_windows": 4,
    "max_eval_samples": 64,
    "eval_batch_size": 64,
    "fid_num_samples": 64,
    "denoising_loss_images": 64,
}

logger = logging.getLogger(__name__)


def smoke_run(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment asks for a smoke run (`HF_DIFFUSIONBLOCKS_SMOKE` set to anything but
    empty, `0`, `false` or `no`)."""
    value = (os.environ if environ is None else environ).get(SMOKE_ENVIRONMENT_VARIABLE, "")
    return value.strip().lower() not in ("", "0", "false", "no")


def apply_smoke_caps(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """In a smoke run, lower `args`' step counts and sizes to `SMOKE_CAPS` in place and return what changed
    (name -> new value); outside one, change nothing and return {}. A budget given in epochs becomes the
    capped step budget (`--num_train_epochs` and `--max_train_steps` exclude each other)."""
    if not smoke_run(environ):
        return {}
    changed: dict[str, object] = {}
    if getattr(args, "num_train_epochs", None) is not None:
        args.num_train_epochs = None
        args.max_train_steps = SMOKE_CAPS["max_train_steps"]
        changed.update(num_train_epochs=None, max_train_steps=args.max_train_steps)
    for name, cap in SMOKE_CAPS.items():
        value = getattr(args, name, None)
        if isinstance(value, list):
            capped = [min(item, cap) for item in value]
        elif isinstance(value, int) and not isinstance(value, bool):
            capped = min(value, cap)
        else:
            continue
        if capped != value:
            setattr(args, name, capped)
            changed[name] = capped
    if changed:
        logger.warning("%s is set: smoke run with %s", SMOKE_ENVIRONMENT_VARIABLE,
                       ", ".join(f"--{name} {value}" for name, value in changed.items()))
    return changed
