"""Silence known-spurious library log messages inside a block (never process-wide, never at import)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["quiet_dtype_cast_warning", "quiet_logger"]


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Raise logger ``name`` to ERROR inside the block (for known-spurious library warnings)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def quiet_dtype_cast_warning() -> contextlib.AbstractContextManager[None]:
    """Silence diffusers' spurious "should be kept in float32: []" warning on ``Module.to(dtype)``."""
    return quiet_logger("diffusers.models.modeling_utils")
