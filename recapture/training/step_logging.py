"""Logging from a training step without making the host wait for the device.

Two things in Lightning's per-step logging stop a GPU step's queue from running ahead of the host:

* a value with ``prog_bar=True`` is converted to a Python number after *every* batch (the progress
  bar's metrics are rebuilt each step), which for a device tensor is a copy to the host that waits
  for every queued kernel;
* a Python number is turned into a tensor on the module's device (``torch.tensor(x, device=...)``),
  a host-to-device copy from pageable memory that PyTorch completes synchronously.

So the step logs its device tensors for the logger only (Lightning converts them when it writes a
line, every ``log_every_n_steps``), numbers as host tensors (:func:`host_value`), and gives the
progress bar a host copy of each loss every ``log_every_n_steps`` steps of that loss
(:class:`ProgressBarLosses`): one wait per that many steps instead of one per step.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule

__all__ = ["ProgressBarLosses", "host_value", "log_learning_rate"]


def host_value(value: float | torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor Lightning can log without a copy to the device: numbers become host tensors."""
    return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))


def log_learning_rate(module: LightningModule, batch_size: int) -> None:
    """Log ``train/lr`` of the first optimiser (here rather than by LearningRateMonitor, which needs a logger)."""
    module.log("train/lr", host_value(module.trainer.optimizers[0].param_groups[0]["lr"]), batch_size=batch_size)


class ProgressBarLosses:
    """The progress bar's losses, refreshed every ``log_every_n_steps`` steps of each one.

    ``show(module, "loss_temporal", loss, b)`` logs a host copy of ``loss`` under that name with
    ``prog_bar=True, logger=False`` on the first call and then every ``trainer.log_every_n_steps``
    calls for that name; between them the bar shows the last copy. Counting per name means each loss
    is refreshed at that rate even when step kinds alternate.
    """

    def __init__(self) -> None:
        self._calls: dict[str, int] = {}

    def show(self, module: LightningModule, name: str, loss: torch.Tensor, batch_size: int) -> bool:
        """Log ``loss`` to the progress bar when it is due; returns whether it was."""
        every = max(1, int(module.trainer.log_every_n_steps or 1))
        calls = self._calls.get(name, 0)
        self._calls[name] = calls + 1
        if calls % every:
            return False
        module.log(name, loss.detach().cpu(), prog_bar=True, logger=False, batch_size=batch_size)
        return True
