"""LightningCLI wiring for the Lightning family of ``recapture`` subcommands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.cli import LightningCLI

# Subcommands added by ReCaptureTrainer methods, with their one-line help (filled in by later stages).
_EXTRA: dict[str, str] = {}


def extra_subcommands() -> dict[str, str]:
    """Extra Lightning subcommands and their one-line descriptions."""
    return dict(_EXTRA)


class ReCaptureCLI(LightningCLI):
    """LightningCLI with recapture's defaults (seeded runs, config saved next to the run)."""


def run_lightning(args: Sequence[str] | None) -> Any:
    """Run a Lightning subcommand (``fit``, ``validate``, ...) with ``args`` (None: ``sys.argv``)."""
    return ReCaptureCLI(
        args=None if args is None else list(args),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
    )
