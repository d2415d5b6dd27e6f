"""Callbacks that watch training: per-step timings and peak memory, and progress lines for log files."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from recapture.training.callbacks.base import _Ordered, _results
from recapture.utils import RecaptureError

log = logging.getLogger("recapture.training.callbacks")  # the name the logs have always shown


class StepTimer(_Ordered):
    """Time every training step by kind (temporal / spatial) and record the peak accelerator memory.

    Adds ``step_temporal_s`` / ``step_spatial_s`` (medians, the first step of each kind left out as
    warm-up when there are more) and ``train_peak_memory_gb`` to the run's timings (``report.json``)
    and logs ``timing/step_<kind>_s`` every step. It synchronises the device at step boundaries to
    measure: leave it out of production runs; ``benchmarks/gpu_check.py`` uses it.
    """

    def __init__(self) -> None:
        self._t0 = 0.0
        self._kind = ""
        self.times: dict[str, list[float]] = {"temporal": [], "spatial": []}

    @staticmethod
    def _sync(pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._sync(pl_module)
        self._kind = pl_module.step_kind()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._sync(pl_module)
        seconds = time.perf_counter() - self._t0
        self.times[self._kind].append(seconds)
        pl_module.log(f"timing/step_{self._kind}_s", seconds, on_step=True, batch_size=1)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        timings = _results(pl_module).timings
        for kind, values in self.times.items():
            if values:
                kept = values[1:] if len(values) > 1 else values
                timings[f"step_{kind}_s"] = float(torch.tensor(kept).median())
        if pl_module.device.type == "cuda":
            timings["train_peak_memory_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30


def format_duration(seconds: float) -> str:
    """``"4m05s"``, or ``"1h02m03s"`` from an hour (whole seconds; negative counts as 0)."""
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class StepProgress(Callback):
    """One progress line every ``every_n_steps`` steps: step/total, step kind, loss, s/step, elapsed, ETA.

    Meant for log files (SLURM, nohup, CI), where a progress bar prints nothing for minutes and then
    one line: ``recapture fit`` adds it when stderr is not a terminal (``when: auto``).

    Args:
        every_n_steps: steps between lines (the first and the last step always print).
        when: ``auto`` (only when stderr is not a terminal), ``always`` or ``never``.
    """

    def __init__(self, every_n_steps: int = 10, when: str = "auto") -> None:
        if when not in ("auto", "always", "never"):
            raise RecaptureError(f"StepProgress(when={when!r}) must be auto, always or never")
        self.every_n_steps = max(1, int(every_n_steps))
        self.when = when
        self.lines: list[str] = []
        self._t0: float | None = None
        self._start = 0

    def active(self) -> bool:
        import sys

        return self.when == "always" or (self.when == "auto" and not sys.stderr.isatty())

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0, self._start = time.perf_counter(), trainer.global_step

    @rank_zero_only
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, *args: Any) -> None:
        if not self.active() or self._t0 is None:
            return
        step, total = trainer.global_step, trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if not (step == self._start + 1 or step % self.every_n_steps == 0 or step == total):
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        elapsed = time.perf_counter() - self._t0
        per_step = elapsed / max(1, step - self._start)
        of = f"/{total} ({100 * step / total:.0f}%)" if total else ""
        eta = f", eta {format_duration(per_step * (total - step))}" if total else ""
        kind = getattr(pl_module, "schedule", None)
        kind = f" {kind.kind(step - 1)}" if kind is not None else ""
        value = f" loss {float(loss.detach()):.4g}" if isinstance(loss, torch.Tensor) else ""
        line = f"step {step}{of}{kind}{value} | {per_step:.2f} s/step, elapsed {format_duration(elapsed)}{eta}"
        self.lines.append(line)
        log.info(line)

