"""What ``fit`` (and the benchmark's per-scene fits) set up before training.

The models are found first (:func:`resolve_models`), the progress bar is tqdm
(:func:`prefer_tqdm_progress`), checkpoints go to the run folder (:func:`place_checkpoints`), and
``--overwrite`` clears the previous run (:func:`prepare_run_folder`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer

log = logging.getLogger("recapture")


def prefer_tqdm_progress(trainer: Trainer, config: Any = None) -> None:
    """Use Lightning's tqdm progress bar instead of its Rich default (unless the config asks for Rich).

    The end-of-fit callbacks sample with their own tqdm bars while the training bar is still open;
    under Rich's live display those writes go through Rich's stderr proxy, which recurses without
    end in a Jupyter kernel (RecursionError) and garbles terminals. tqdm bars nest cleanly.
    """
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    trainer_config = config.get("trainer") if config is not None else None
    asked = trainer_config is not None and "RichProgressBar" in str(trainer_config.get("callbacks"))
    callbacks = trainer.callbacks
    for i, cb in enumerate(callbacks):
        if isinstance(cb, RichProgressBar) and not asked:
            callbacks[i] = TQDMProgressBar()



def resolve_models(model: Any, datamodule: Any, svd: bool = True) -> None:
    """Find every model the run needs before any heavy work (local directory, hub cache or download).

    A missing model stops the command at once with one line naming it and how to get it
    (:mod:`recapture.hub`), instead of failing after the anchor has been rendered.

    Args:
        model: the :class:`~recapture.training.module.ReCaptureModule` (its SVD weights).
        datamodule: the :class:`~recapture.training.datamodule.ReCaptureDataModule` (its depth model).
        svd: also resolve the SVD weights (not needed by ``anchor``).
    """
    from recapture.adaptation import resolve_components

    if datamodule is not None and datamodule.needs_depth_model():
        datamodule.depth.resolve_weights()
    if svd and model is not None and not model.components_config.tiny:
        resolve_components(model.components_config)



def place_checkpoints(trainer: Trainer, replace_in_run_folder: bool = False) -> None:
    """Checkpoints without an explicit ``dirpath`` go to ``<default_root_dir>/checkpoints`` with ``last.ckpt``.

    (Lightning would otherwise put them under the logger's folder, e.g. ``./<wandb project>/<id>/``.)
    They are written atomically (:class:`~recapture.training.run_folder.AtomicCheckpointIO`).

    Args:
        trainer: the trainer whose ``ModelCheckpoint`` callbacks are placed.
        replace_in_run_folder: inside the run folder, a checkpoint replaces a file of the same name instead
            of Lightning's ``last-v1.ckpt``, so ``last.ckpt`` is always the latest (``fit`` sets it: its run
            folder is locked and never reused silently, see :mod:`recapture.training.run_folder`).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from recapture.training.run_folder import install_atomic_checkpoint_io, is_remote

    root = Path(trainer.default_root_dir)
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint):
            if cb.dirpath is None:
                cb.dirpath = str(root / "checkpoints")
            if cb.save_last is None:
                cb.save_last = True
            if (replace_in_run_folder and not is_remote(cb.dirpath) and _inside(Path(cb.dirpath), root)
                    and hasattr(cb, "_enable_version_counter")):
                cb._enable_version_counter = False
    install_atomic_checkpoint_io(trainer)



def _inside(path: Path, root: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents



def prepare_run_folder(trainer: Trainer, config: Any) -> None:
    """With ``--overwrite``, delete the previous run's outputs and checkpoints before training (rank 0).

    Runs after the models are resolved, so that a run refused for a missing model deletes nothing.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from recapture.training import run_folder

    if not config.get("overwrite") or run_folder.process_rank() != 0:
        return
    root = Path(trainer.default_root_dir)
    if run_folder.is_remote(root):
        return
    ckpt_dirs = [cb.dirpath for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    ckpt_path = config.get("ckpt_path")
    keep = ckpt_path if ckpt_path is not None and Path(str(ckpt_path)).is_file() else None
    deleted = run_folder.clear_previous_run(root, [d for d in ckpt_dirs if not run_folder.is_remote(d)], keep=keep)
    if deleted:
        log.info("--overwrite: deleted the previous run's %s in %s", ", ".join(deleted), root)

