"""What both pretraining stages share: the optimiser, the learning-rate schedule, the export contract."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable

from recapture.training.step_logging import ProgressBarLosses, log_learning_rate
from recapture.utils import RecaptureError


@dataclass
class LRSchedule:
    """Per-step learning-rate multiplier: linear warm-up, then cosine (or constant) to ``trainer.max_steps``.

    Args:
        warmup_steps: steps of linear warm-up from 0.
        decay: ``cosine`` decays to ``final_ratio`` times the base rate at ``trainer.max_steps``;
            ``constant`` keeps the base rate (use it when stopping by ``trainer.max_time``).
        final_ratio: multiplier reached at the last step (cosine).
    """

    warmup_steps: int = 100
    decay: Literal["cosine", "constant"] = "cosine"
    final_ratio: float = 0.05

    def factor(self, step: int, total: int) -> float:
        """The multiplier at ``step`` of ``total`` (``total <= 0``: no decay)."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.decay == "constant" or total <= self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def default_optimizer(params: Any) -> torch.optim.Optimizer:
    """AdamW, lr 1e-3, no weight decay."""
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)


class PriorStage(LightningModule):
    """Base of the pretraining stages (:class:`~recapture.training.pretrain.VAEStage`,
    :class:`~recapture.training.pretrain.UNetStage`).

    Subclasses define ``stage`` (its name), ``trainable_parameters()``, ``export(out, record)``
    (write the stage's product into the folder ``out``) and ``figures()`` (measured numbers for the
    model card), and set ``uses_latent_cache`` when they train on the data module's latent pool.
    """

    stage: str = "base"
    uses_latent_cache: bool = False

    def __init__(self, optimizer: OptimizerCallable = default_optimizer, lr_schedule: LRSchedule = LRSchedule()) -> None:
        super().__init__()
        if lr_schedule.warmup_steps < 0 or not 0 <= lr_schedule.final_ratio <= 1:
            raise RecaptureError(
                f"model.lr_schedule: warmup_steps={lr_schedule.warmup_steps} must be >= 0 and final_ratio="
                f"{lr_schedule.final_ratio} in [0, 1]"
            )
        self.optimizer_factory = optimizer
        self._progress_losses = ProgressBarLosses()
        self.lr_schedule = lr_schedule

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        total = self.trainer.max_steps if self.trainer is not None else -1
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.lr_schedule.factor(step, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def log_lr(self, batch_size: int) -> None:
        """Log ``train/lr`` (here rather than by LearningRateMonitor, which needs a logger), a host tensor."""
        log_learning_rate(self, batch_size)

    def log_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Log ``train/loss`` (on the device, for the logger) and the progress bar's ``loss`` (a host copy
        every ``log_every_n_steps`` steps): no host-device sync per step (:mod:`recapture.training.step_logging`)."""
        self.log("train/loss", loss, batch_size=batch_size)
        self._progress_losses.show(self, "loss", loss, batch_size)

    def export(self, out: Path, record: dict[str, Any]) -> dict[str, Any]:
        """Write the stage's product into ``out`` (a fresh folder); return figures for the record."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Parameter counts and sizes of the stage's parts (for logs and the model card)."""
        raise NotImplementedError
