"""Silence known-spurious library log messages inside a block (never process-wide, never at import)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["import_svd_pipeline_quietly", "quiet_dtype_cast_warning", "quiet_logger"]


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise logger ``name`` to ``level`` inside the block (for known-spurious library warnings).

    ``logging.CRITICAL`` also hides a library's ``error`` messages about a failure the caller reports
    itself as one line.
    """
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def quiet_dtype_cast_warning() -> contextlib.AbstractContextManager[None]:
    """Silence diffusers' spurious "should be kept in float32: []" warning on ``Module.to(dtype)``."""
    return quiet_logger("diffusers.models.modeling_utils")


def import_svd_pipeline_quietly() -> None:
    """Import diffusers' SVD pipeline module with transformers' torchvision fall-back warning silenced.

    The module imports transformers' ``CLIPImageProcessor``, whose default backend needs torchvision;
    transformers then warns (once) that it uses the PIL backend, which is what this project wants.
    Commands call this before building their parser (jsonargparse resolves type hints that name the
    pipeline), so the warning never reaches the console.
    """
    with quiet_logger("transformers.utils.import_utils"):
        import diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion  # noqa: F401
