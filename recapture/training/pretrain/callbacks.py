"""Callbacks of ``recapture pretrain``: steady progress lines with a loss history, and the export.

``recapture pretrain`` adds both when the config lists neither (they are how a run reports and what
it produces), on the global-zero rank only where they write or print:

* :class:`PretrainProgress` logs one line every ``every_n_steps`` optimisation steps (loss, s/step,
  elapsed, ETA, latest validation figures) and keeps the loss / validation history, saved in
  checkpoints so that a resumed run continues its curves.
* :class:`ExportPrior` writes the stage's product at the end of training into ``output`` (default
  ``<default_root_dir>/export``), atomically: the stage's weights (VAE stage: ``vae/``; UNet stage:
  the complete set in diffusers pipeline layout), ``pretrain.json`` (the record: command, config,
  data, steps, sizes, figures, history), ``loss_curves.png``, ``model_card.md`` and
  ``checksums.json`` (sha256 of every other file).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from recapture.checksums import CHECKSUMS, sha256_file, verify_checksums, write_checksums  # noqa: F401
from recapture.training.callbacks.progress import format_duration
from recapture.training.pretrain.card import write_loss_curves, write_model_card
from recapture.utils import atomic_path, write_json

log = logging.getLogger("recapture")

RECORD = "pretrain.json"


class PretrainProgress(Callback):
    """Progress lines at a steady cadence and the loss/validation history (kept in checkpoints).

    Args:
        every_n_steps: optimisation steps between progress lines and history points.
    """

    def __init__(self, every_n_steps: int = 25) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self.history: list[dict[str, float]] = []  # {"step", "loss", "seconds"}
        self.validation: list[dict[str, float]] = []  # {"step", "val/...": value}
        self.train_seconds = 0.0
        self._losses: list[float] = []
        self._clock: float | None = None
        self._start_step = 0
        self._session_start: float | None = None

    # -- state kept in checkpoints (resume continues the curves and the clock)
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "validation": self.validation, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.validation = list(state.get("validation", []))
        self.train_seconds = float(state.get("train_seconds", 0.0))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._clock = self._session_start = time.perf_counter()
        self._start_step = trainer.global_step
        if trainer.is_global_zero:
            parts = {k: f"{v['parameters'] / 1e6:.2f} M params" for k, v in pl_module.describe().items()}
            log.info("pretrain[%s]: %s; steps %d -> %s, batch %s x %d rank(s)%s", pl_module.stage, parts,
                     trainer.global_step, trainer.max_steps, getattr(trainer.datamodule, "batch_size", "?"),
                     trainer.world_size, f", max_time {trainer.max_time}" if getattr(trainer, "max_time", None) else "")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._losses.append(float(loss.detach()))
        step = trainer.global_step
        if step % self.every_n_steps or not self._losses or (self.history and self.history[-1]["step"] >= step):
            return
        now = self.flush()
        mean = sum(self._losses) / len(self._losses)
        self._losses.clear()
        self.history.append({"step": step, "loss": mean, "seconds": round(self.train_seconds, 2)})
        if trainer.is_global_zero:
            log.info(self._line(trainer, pl_module, step, mean, now))

    def _line(self, trainer: Trainer, pl_module: LightningModule, step: int, loss: float, now: float) -> str:
        done = max(1, step - self._start_step)
        per_step = (now - (self._session_start or now)) / done
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        eta = f", eta {format_duration(per_step * (total - step))}" if total else ""
        val = ""
        if self.validation:
            last = {k: v for k, v in self.validation[-1].items() if k != "step" and "sigma" not in k}
            val = " | " + ", ".join(f"{k} {v:.4g}" for k, v in last.items())
        of = f"/{total} ({100 * step / total:.0f}%)" if total else ""
        return (f"pretrain[{pl_module.stage}] step {step}{of} loss {loss:.4g} | {per_step:.2f} s/step, "
                f"elapsed {format_duration(self.train_seconds)}{eta}{val}")

    def flush(self) -> float:
        """Add the training time since the last call to ``train_seconds``; return the clock."""
        now = time.perf_counter()
        if self._clock is not None:
            self.train_seconds += now - self._clock
        self._clock = now
        return now

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.flush()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics:
            if self.validation and self.validation[-1]["step"] == trainer.global_step:
                self.validation[-1].update(metrics)
            else:
                self.validation.append({"step": trainer.global_step, **metrics})
        self._clock = time.perf_counter()  # validation time is not training time


def machine_line() -> str:
    """CPU / GPU, core count, torch version, date (for records and benchmark tables)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    return (f"{cpu}, {os.cpu_count()} CPUs (torch threads {torch.get_num_threads()}), {gpu}, torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}")


class ExportPrior(Callback):
    """At the end of training, write the stage's product, record, curves, model card and checksums.

    Args:
        output: folder to write (replaced atomically); default ``<default_root_dir>/export``.
    """

    def __init__(self, output: str | None = None) -> None:
        self.output = output
        self.command: str | None = None  # set by `recapture pretrain` (the exact command line)
        self.written: Path | None = None

    def folder(self, trainer: Trainer) -> Path:
        """Where the export goes."""
        return Path(self.output) if self.output else Path(trainer.default_root_dir) / "export"

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        out = self.folder(trainer)
        t0 = time.perf_counter()
        record = self.record(trainer, pl_module)
        with atomic_path(out) as tmp:
            tmp.mkdir()
            record["figures"] = pl_module.export(tmp, record)
            record["export_seconds"] = round(time.perf_counter() - t0, 1)
            write_json(tmp / RECORD, record)
            stages = [*record.get("previous_stages", []), record]
            write_loss_curves(tmp / "loss_curves.png", stages)
            weights = {f.relative_to(tmp).as_posix(): sha256_file(f) for f in sorted(tmp.rglob("*.safetensors"))}
            write_model_card(tmp / "model_card.md", stages, weights)
            write_checksums(tmp)
        self.written = out
        log.info("pretrain[%s]: exported in %.1f s -> %s", pl_module.stage, time.perf_counter() - t0, out)

    def record(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Everything the model card says about this stage."""
        import diffusers

        progress = next((cb for cb in trainer.callbacks if isinstance(cb, PretrainProgress)), None)
        if progress is not None:
            progress.flush()
        data = trainer.datamodule
        config = Path(trainer.default_root_dir) / "config.yaml"
        record: dict[str, Any] = {
            "stage": pl_module.stage,
            "command": self.command or " ".join(["recapture", *sys.argv[1:]]),
            "config": config.read_text() if config.is_file() else None,
            "machine": machine_line(),
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "steps": trainer.global_step,
            "precision": str(trainer.precision),
            "world_size": trainer.world_size,
            "batch_size": data.batch_size,
            "data": {**data.clip_settings(), "split": "train", "eval_clips": data.eval_clips},
            "parts": pl_module.describe(),
            "train_seconds": round(progress.train_seconds, 1) if progress else None,
            "history": progress.history if progress else [],
            "validation": progress.validation if progress else [],
        }
        if pl_module.uses_latent_cache:
            record["data"]["pool_clips"] = data.pool_clips
            record["data"]["epochs"] = round(trainer.global_step * data.batch_size * trainer.world_size
                                             / max(1, data.pool_clips), 2)
            previous = Path(pl_module.vae_dir).expanduser() / RECORD
            if previous.is_file():
                prev = json.loads(previous.read_text())
                record["previous_stages"] = [*prev.pop("previous_stages", []), prev]
        else:
            record["data"]["clips_seen"] = trainer.global_step * data.batch_size * trainer.world_size
        return record
