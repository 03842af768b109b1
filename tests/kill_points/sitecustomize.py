"""Loaded by Python at start-up when this folder is on PYTHONPATH (tests only): SIGKILLs the process at a
chosen point of a training run, so tests can check what a real kill leaves behind and that resuming from it
is exact. Nothing here runs unless HF_DIFFUSIONBLOCKS_TEST_KILL is set, as `<point>:<n>`:

    step:<n>              inside the n-th optimizer step (after backward, before the update)
    checkpoint_write:<n>  inside the n-th checkpoint save (its files are written, the folder not yet renamed)
    final_save:<n>        after the n-th file renamed into place by an atomic write or folder save
"""

import os
import signal

_SPEC = os.environ.get("HF_DIFFUSIONBLOCKS_TEST_KILL")


def _killer(point: str, count: int):
    calls = {"n": 0}

    def tick() -> None:
        calls["n"] += 1
        if calls["n"] == count:
            os.kill(os.getpid(), signal.SIGKILL)

    return tick


def _install(point: str, count: int) -> None:
    tick = _killer(point, count)
    if point == "step":
        import torch

        original_step = torch.optim.AdamW.step

        def step(self, *args, **kwargs):
            tick()
            return original_step(self, *args, **kwargs)

        torch.optim.AdamW.step = step
    elif point == "checkpoint_write":
        from hf_diffusionblocks.training import checkpointing

        original_save = checkpointing.save_training_state

        def save_training_state(*args, **kwargs):
            original_save(*args, **kwargs)
            tick()

        checkpointing.save_training_state = save_training_state
    elif point == "final_save":
        import types

        from hf_diffusionblocks import atomic_io

        def replace(source, target):
            os.replace(source, target)
            if "checkpoint-" not in str(target):      # checkpoints are not the final save
                tick()

        atomic_io.os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
        atomic_io.os.replace = replace
    else:
        raise ValueError(f"HF_DIFFUSIONBLOCKS_TEST_KILL: unknown point {point!r}")


if _SPEC:
    _point, _count = _SPEC.rsplit(":", 1)
    _install(_point, int(_count))
