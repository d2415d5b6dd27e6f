"""W&B and Lightning's console noise around a Lightning command.

W&B runs offline when no credentials are configured (:func:`ensure_wandb_mode`) and its run is
closed after every command (:func:`finish_wandb`); Lightning's tips are silenced
(:func:`quiet_lightning_tips`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("recapture")


def finish_wandb(failed: bool = False) -> None:
    """Close the process's W&B run (if any), so that the next command in this process starts its own.

    Runs after every Lightning command, also when it fails or is interrupted (Lightning itself
    leaves the run open, and a later ``WandbLogger`` would silently reuse it).
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)



def uses_wandb(trainer: Any) -> bool:
    """Whether a parsed ``trainer:`` section has a W&B logger (``WandbLogger``, alone or in a list)."""
    return "WandbLogger" in str(trainer.get("logger"))



def ensure_wandb_mode() -> str:
    """Run W&B offline when no credentials are configured, and say how to sync later.

    Returns the mode in force (``online``/``offline``/whatever ``WANDB_MODE`` says).
    """
    import os

    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY") or _netrc_has_wandb():
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    log.warning(
        "W&B: no credentials found (WANDB_API_KEY or `wandb login`), logging offline to ./wandb. "
        "Upload later with `wandb sync wandb/offline-run-*`, or use --config configs/loggers/csv.yaml."
    )
    return "offline"



def _netrc_has_wandb() -> bool:
    import netrc
    import os

    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return auth is not None



class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip")



def quiet_lightning_tips() -> None:
    """Silence Lightning's advertising and a warning that is wrong for us (idempotent).

    * "💡 Tip: ... litlogger ..." on every trainer;
    * "Found N module(s) in eval mode at the start of training": the frozen SVD base is in eval
      mode on purpose (only the LoRAs train; dropout and norms of the base stay in inference mode).
    """
    import warnings

    target = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in target.filters):
        target.addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

