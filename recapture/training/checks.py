"""The checks of a ``fit`` config, run before anything is instantiated: one function per concern.

:func:`check_fit_config` runs them in order: the step limits, ``data.num_frames``, the learning
rate, ``--ckpt_path`` (complete, loadable and not already done), then the run folder (locked; one
that holds a previous run is refused unless ``--overwrite`` or ``--ckpt_path`` is given). Every
refusal is one :class:`RecaptureError` line naming the value and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recapture.utils import RecaptureError


def check_fit_config(config: Any) -> Any:
    """Refuse, before anything is instantiated, a ``fit`` that would do nothing or cannot work.

    Checks the step limits, ``data.num_frames``, the learning rate and ``--ckpt_path`` (complete and
    loadable), then locks the run folder (``trainer.default_root_dir``) and refuses one that holds a
    previous run unless ``--overwrite`` or ``--ckpt_path`` is given. Every refusal is one
    :class:`RecaptureError` line naming the value and the fix.

    Returns:
        the :class:`~recapture.training.run_folder.RunLock` (None on ranks other than 0).
    """
    check_step_limits(config)
    check_num_frames(config)
    check_learning_rate(config)
    check_resume_checkpoint(config)
    return claim_run_folder(config)


def check_step_limits(config: Any) -> None:
    """``trainer.max_steps``, ``max_epochs`` and ``limit_train_batches`` must leave something to train."""
    max_steps = config.get("trainer.max_steps")
    if max_steps is not None and max_steps == 0:
        raise RecaptureError(
            "--trainer.max_steps 0 trains nothing: give a positive number of steps (or -1 for no step limit)")
    if max_steps is not None and max_steps < -1:
        raise RecaptureError(
            f"--trainer.max_steps {max_steps} is negative: give a positive number of steps (or -1 for no step limit)")
    max_epochs = config.get("trainer.max_epochs")
    if max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
        raise RecaptureError(
            f"--trainer.max_epochs {max_epochs} trains nothing: give a positive number (or -1 for no epoch limit)")
    limit = config.get("trainer.limit_train_batches")
    if limit is not None and not isinstance(limit, bool) and limit <= 0:
        raise RecaptureError(
            f"--trainer.limit_train_batches {limit} trains nothing: give a positive count or fraction (or leave it out)")


def check_num_frames(config: Any) -> None:
    """``data.num_frames``: a video model fine-tunes on at least 2 frames."""
    num_frames = config.get("data.num_frames")
    if isinstance(num_frames, int) and num_frames < 2:
        raise RecaptureError(
            f"--data.num_frames {num_frames}: fine-tuning a video model needs at least 2 frames "
            "(SVD uses 14, or 25 for img2vid-xt); give --data.num_frames 2 or more")


def check_learning_rate(config: Any) -> None:
    """The optimizer's ``lr``, when given, must not be negative."""
    lr = _learning_rate(config.get("model.optimizer"))
    if lr is not None and lr < 0:
        raise RecaptureError(
            f"--model.optimizer.init_args.lr {lr} is negative: give a positive learning rate (the paper uses 5e-4)")


def _learning_rate(optimizer: Any) -> float | None:
    """``lr`` of an optimizer config (``class_path``/``init_args``), if given."""
    init_args = getattr(optimizer, "init_args", None) if optimizer is not None else None
    lr = getattr(init_args, "lr", None) if init_args is not None else None
    return lr if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None


def check_resume_checkpoint(config: Any) -> None:
    """``--ckpt_path``: complete and loadable, and not already at ``trainer.max_steps``."""
    from recapture.training import run_folder

    ckpt_path = config.get("ckpt_path")
    if ckpt_path is None:
        return
    max_steps = config.get("trainer.max_steps")
    state = run_folder.check_checkpoint(ckpt_path, weights_only=config.get("weights_only"))
    if state is not None and isinstance(max_steps, int) and max_steps > 0:
        step = state.get("global_step")
        if isinstance(step, int) and step >= max_steps:
            raise RecaptureError(
                f"--ckpt_path {ckpt_path} is already at step {step} and --trainer.max_steps is {max_steps}: "
                f"nothing to train; give --trainer.max_steps above {step}")


def claim_run_folder(config: Any) -> Any:
    """Lock the run folder (rank 0, local folders) and refuse one that holds a previous run.

    A previous run is refused unless ``--overwrite`` (deleted later, :func:`~recapture.training.fit_setup.prepare_run_folder`) or
    ``--ckpt_path`` (resumed) is given.

    Returns:
        the :class:`~recapture.training.run_folder.RunLock` (None on ranks other than 0 and for
        remote folders).
    """
    import os

    from recapture.training import run_folder

    root = config.get("trainer.default_root_dir") or os.getcwd()
    if run_folder.is_remote(root) or run_folder.process_rank() != 0:
        return None
    lock = run_folder.lock_run_folder(root)
    try:
        found = run_folder.previous_run(root)
        if found and not config.get("overwrite") and config.get("ckpt_path") is None:
            run_folder.refuse_reuse(Path(root), found)
    except BaseException:
        lock.release()
        raise
    return lock
