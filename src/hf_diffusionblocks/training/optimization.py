"""Everything that steps with one block's parameters: AdamW, the learning-rate schedule, the gradient
scaler and the optional EMA, built from the run's settings and saved / restored as one state.

The state is a dict of plain tensors and numbers (`training_state.py` writes it without pickle):

    {"optimizer": ..., "lr_schedule": ..., "scaler": ..., "ema": ...}    # "ema" only with --use_ema
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from .arguments import OptimizationSettings


@dataclass
class BlockOptimization:
    """The optimizer of one block's `parameters` and what steps with it."""

    parameters: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_schedule: Any
    scaler: torch.amp.GradScaler
    ema: EMAModel | None = None

    @classmethod
    def build(cls, parameters: list[torch.nn.Parameter], settings: OptimizationSettings, device_type: str) -> BlockOptimization:
        """AdamW over `parameters` with the settings' schedule, a scaler enabled under fp16, and the EMA of --use_ema."""
        optimizer = torch.optim.AdamW(
            parameters,
            lr=settings.learning_rate,
            betas=(settings.adam_beta1, settings.adam_beta2),
            weight_decay=settings.adam_weight_decay,
            eps=settings.adam_epsilon,
        )
        lr_schedule = get_scheduler(settings.lr_scheduler, optimizer=optimizer, num_warmup_steps=settings.lr_warmup_steps,
                                    num_training_steps=settings.max_train_steps)
        scaler = torch.amp.GradScaler(device_type, enabled=settings.mixed_precision == "fp16")
        ema = EMAModel(parameters, decay=settings.ema_decay) if settings.use_ema else None
        return cls(parameters, optimizer, lr_schedule, scaler, ema)

    @property
    def learning_rate(self) -> float:
        return self.lr_schedule.get_last_lr()[0]

    def step(self, max_grad_norm: float) -> None:
        """Clip (when `max_grad_norm` > 0), step the optimizer, scaler and schedule, clear the gradients, update the EMA."""
        if max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.parameters)

    def use_averaged_weights(self) -> None:
        """With an EMA, copy the averaged weights into the parameters (the block's weights from then on)."""
        if self.ema is not None:
            self.ema.copy_to(self.parameters)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], where: str = "training state", step: int | None = None) -> None:
        """Restore a saved state after checking it against this run's settings (`check_state`)."""
        self.check_state(state, where, step)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def check_state(self, state: Any, where: str = "training state", step: int | None = None) -> None:
        """A `ValueError` naming `where` unless `state` is what this optimization saves under this run's settings:
        the same parts, AdamW's hyper-parameters (`initial_lr`, `betas`, `eps`, `weight_decay`) and the schedule's
        base rates as built here, the schedule at step `step` (when given) and each group's learning rate the one
        the schedule gives there, and the EMA's decay."""
        expected_parts = {"optimizer", "lr_schedule", "scaler"} | ({"ema"} if self.ema is not None else set())
        if not isinstance(state, dict) or set(state) != expected_parts:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{where}: the training state holds {found}, this run saves {sorted(expected_parts)}.")
        problems = []
        groups = state["optimizer"].get("param_groups") if isinstance(state["optimizer"], dict) else None
        if not isinstance(groups, list) or len(groups) != len(self.optimizer.param_groups):
            raise ValueError(f"{where}: the optimizer state has no param_groups like this run's "
                             f"({len(self.optimizer.param_groups)} group(s)).")
        for index, (saved, built) in enumerate(zip(groups, self.optimizer.param_groups)):
            for name in ("initial_lr", "betas", "eps", "weight_decay"):
                if name in built and (not isinstance(saved, dict) or saved.get(name) != built[name]):
                    problems.append(f"optimizer param_groups[{index}].{name}={_get(saved, name)!r} (this run: {built[name]!r})")
        schedule = state["lr_schedule"] if isinstance(state["lr_schedule"], dict) else {}
        last_epoch = schedule.get("last_epoch")
        if schedule.get("base_lrs") != self.lr_schedule.base_lrs:
            problems.append(f"lr_schedule base_lrs={schedule.get('base_lrs')!r} (this run: {self.lr_schedule.base_lrs!r})")
        if not isinstance(last_epoch, int) or isinstance(last_epoch, bool) or last_epoch < 0 or (
                step is not None and last_epoch != step):
            problems.append(f"lr_schedule last_epoch={last_epoch!r} (the checkpoint's step: {step!r})")
        elif not problems:
            lambdas = getattr(self.lr_schedule, "lr_lambdas", [])
            for index, (group, base_lr, rate) in enumerate(zip(groups, self.lr_schedule.base_lrs, lambdas)):
                lr = group.get("lr") if isinstance(group, dict) else None
                if not isinstance(lr, float) or not math.isclose(lr, base_lr * rate(last_epoch), rel_tol=1e-12, abs_tol=0.0):
                    problems.append(f"optimizer param_groups[{index}].lr={lr!r} (the schedule at step {last_epoch}: "
                                    f"{base_lr * rate(last_epoch)!r})")
        if self.ema is not None and _get(state["ema"], "decay") != self.ema.decay:
            problems.append(f"ema decay={_get(state['ema'], 'decay')!r} (this run: {self.ema.decay!r})")
        if problems:
            raise ValueError(f"{where}: the training state does not match this run's settings: {'; '.join(problems)}. "
                             "It was edited, or written by another run: resume from another checkpoint or restart the block.")


def _get(mapping: Any, name: str) -> Any:
    return mapping.get(name) if isinstance(mapping, dict) else None
