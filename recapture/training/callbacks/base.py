"""What the output callbacks share: the run folder, the run's result, logger helpers and the pipeline order.

Every output callback is an :class:`_Ordered`: it names the callbacks whose results it reads in
``after`` and those it cannot do without in ``needs``; :func:`pipeline_order` sorts a callback list
from these declarations.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from recapture.training.results import RunResult
from recapture.utils import RecaptureError


def run_dir(trainer: Trainer) -> Path:
    """The run folder: ``trainer.default_root_dir``."""
    return Path(trainer.default_root_dir)


def _results(pl_module: LightningModule) -> RunResult:
    """The run's declared result object (``pl_module.result``; a plain module gets one on first use)."""
    result = getattr(pl_module, "result", None)
    if not isinstance(result, RunResult):
        result = RunResult()
        pl_module.result = result
    return result


def _record_file(pl_module: LightningModule, name: str, path: Path) -> None:
    _results(pl_module).files[name] = str(path)


def _log_table(trainer: Trainer, key: str, row: dict[str, float]) -> None:
    """Log one row of numbers as a W&B table (other loggers get them via ``log_metrics``)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            lg.log_table(key=key, columns=list(row), data=[list(row.values())])


def _log_video(trainer: Trainer, key: str, path: Path, fps: float) -> None:
    """Log an mp4 to W&B loggers (by path: wandb.Video from arrays needs moviepy)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            lg.experiment.log({key: wandb.Video(str(path), format="mp4"), "trainer/global_step": trainer.global_step})


class _Ordered(Callback):
    """An output callback. ``after``: the callbacks whose results it reads (they run before it when
    present); ``needs``: those it cannot work without (``pipeline_order`` refuses a list lacking them)."""

    after: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


def pipeline_order(callbacks: list[Callback]) -> list[Callback]:
    """``callbacks`` reordered so that every output callback runs after the ones it reads (``after``).

    Other callbacks keep their place before the output callbacks. Stable: callbacks without a
    dependency between them keep the config's order.

    Raises:
        RecaptureError: an output callback ``needs`` one that is not in the list (names the fix).
    """
    present = {type(cb).__name__ for cb in callbacks}
    for cb in callbacks:
        for need in getattr(cb, "needs", ()):
            if need not in present:
                raise RecaptureError(
                    f"{type(cb).__name__} needs {need} in trainer.callbacks (add "
                    f"`- class_path: recapture.training.callbacks.{need}` before it)"
                )
    others = [cb for cb in callbacks if not isinstance(cb, _Ordered)]
    pending = [cb for cb in callbacks if isinstance(cb, _Ordered)]
    ordered: list[Callback] = []
    while pending:
        names = {type(cb).__name__ for cb in pending}
        ready = next(cb for cb in pending if not (set(cb.after) & (names - {type(cb).__name__})))
        ordered.append(ready)
        pending.remove(ready)
    return others + ordered

