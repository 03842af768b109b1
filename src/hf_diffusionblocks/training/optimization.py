"""Everything that steps with one block's parameters: AdamW, the learning-rate schedule, the gradient
scaler and the optional EMA, built from the run's settings and saved / restored as one state.

The state is a dict of plain tensors and numbers (`training_state.py` writes it without pickle):

    {"optimizer": ..., "lr_schedule": ..., "scaler": ..., "ema": ...}    # "ema" only with --use_ema
"""

from __future__ import annotations

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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
