"""On-disk anchor cache entries: one ``.pt`` file per key, written atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from recapture.utils import atomic_path

if TYPE_CHECKING:
    from recapture.anchor.pipeline import AnchorResult

log = logging.getLogger(__name__)

__all__ = ["load_entry", "save_entry"]


def _pack(x: Tensor) -> Any:
    """uint8 when that is lossless (8-bit video colours), else the tensor itself."""
    x = x.detach().cpu()
    q = (x * 255).round()
    if (
        x.is_floating_point()
        and bool(((q / 255).to(x.dtype) == x).all())
        and bool(((q >= 0) & (q <= 255)).all())
    ):
        return {"uint8": q.to(torch.uint8), "dtype": str(x.dtype).removeprefix("torch.")}
    return x


def _unpack(x: Any) -> Tensor:
    if isinstance(x, dict):
        return (x["uint8"].float() / 255).to(getattr(torch, x["dtype"]))
    return x


def save_entry(path: Path, result: AnchorResult) -> Path:
    """Write ``result``'s tensors and report to ``path`` atomically (a crash leaves no entry)."""
    a = result.anchor
    entry = {
        "anchor_frames": _pack(a.frames),
        "anchor_mask": a.mask.detach().cpu().to(torch.uint8),
        "anchor_depth": None if a.depth is None else a.depth.detach().cpu(),
        "mask_dtype": str(a.mask.dtype).removeprefix("torch."),
        "info": a.info,
        "depth": result.depth.detach().cpu(),
        "K": result.K.detach().cpu(),
        "K_source": None if result.K_source is None else result.K_source.detach().cpu(),
        "c2w": result.c2w.detach().cpu(),
        "scene_scale": float(result.scene_scale),
        "report": result.report,
    }
    with atomic_path(path) as tmp:
        torch.save(entry, tmp)
    return path


def load_entry(path: Path) -> dict[str, Any] | None:
    """Read an entry, or None when absent or unreadable (a corrupt entry is a miss, not a crash)."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        entry["anchor_frames"] = _unpack(entry["anchor_frames"])
        entry["anchor_mask"] = entry["anchor_mask"].to(getattr(torch, entry["mask_dtype"]))
        return entry
    except Exception as err:  # truncated by another tool, older format, ...
        log.warning("anchor cache entry %s is unreadable (%s); recomputing", path, err)
        return None
