"""On-disk anchor cache entries: one ``.pt`` file per key, written atomically, checksummed.

Each entry holds the sha256 of its content (every tensor and value, :func:`recapture.caching.content_digest`)
under ``"sha256"``; :func:`load_entry` recomputes it, and an entry that is truncated, bit-flipped,
edited, foreign (a pickle of something else) or unreadable is reported in one warning line,
removed, and treated as a miss. :func:`save_entry` keeps the folder under its size cap (least recently
used entries go first; a hit counts as a use). Entries are read with ``weights_only=True``: nothing
in the file is executed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from recapture import caching
from recapture.utils import atomic_path

if TYPE_CHECKING:
    from recapture.anchor.pipeline import AnchorResult

log = logging.getLogger(__name__)

__all__ = ["SUFFIX", "load_entry", "save_entry"]

SUFFIX = caching.CACHES["anchors"].suffix
_CHECKSUM = "sha256"


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
    entry[_CHECKSUM] = caching.content_digest(entry)
    caching.open_folder(path.parent)
    with atomic_path(path) as tmp:
        torch.save(entry, tmp)
    caching.enforce_cap(path.parent, SUFFIX, keep=(path,))
    return path


def load_entry(path: Path) -> dict[str, Any] | None:
    """Read an entry, or None when absent or bad (a bad entry is reported, removed and recomputed)."""
    caching.open_folder(path.parent)
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(entry, dict):
            raise ValueError(f"holds a {type(entry).__name__}, not an anchor entry")
        stored = entry.pop(_CHECKSUM, None)
        if stored is None:
            raise ValueError("it has no checksum (written by an older version, or not by recapture)")
        if caching.content_digest(entry) != stored:
            raise ValueError("checksum mismatch: its content changed after it was written")
        entry["anchor_frames"] = _unpack(entry["anchor_frames"])
        entry["anchor_mask"] = entry["anchor_mask"].to(getattr(torch, entry["mask_dtype"]))
    except FileNotFoundError:  # evicted or cleared by another process meanwhile: a plain miss
        return None
    except Exception as err:  # truncated, bit-flipped, edited, a foreign pickle, unreadable, older format
        caching.discard(path, "anchor", f"{type(err).__name__}: {err}", log)
        return None
    caching.mark_used(path)
    return entry
