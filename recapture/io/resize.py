"""Output-size rules and antialiased resizing of frame stacks."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from recapture.utils import RecaptureError

ResizeMode = Literal["fit", "crop"]


def _round_to_multiple(x: float, multiple: int) -> int:
    # half-up rounding (Python's round() rounds halves to even), never below one multiple
    return max(multiple, int(math.floor(x / multiple + 0.5)) * multiple)


def _check_size(size: int | tuple[int, int] | None, resize: str, multiple: int) -> None:
    if resize not in ("fit", "crop"):
        raise RecaptureError(f"resize={resize!r} is not a resize mode; use 'fit' or 'crop'")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise RecaptureError(f"multiple={multiple!r} must be a positive integer (1 disables rounding)")
    if size is None:
        return
    sides = (size,) if isinstance(size, int) else tuple(size)
    if len(sides) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sides):
        raise RecaptureError(
            f"size={size!r} must be a positive int (long side) or a pair of positive ints (H, W)"
        )
    if resize == "crop" and len(sides) == 1:
        raise RecaptureError(
            f"resize='crop' needs size=(H, W), got size={size!r}; pass a pair or use resize='fit'"
        )


def target_size(
    height: int,
    width: int,
    size: int | tuple[int, int] | None,
    resize: ResizeMode = "fit",
    multiple: int = 64,
) -> tuple[int, int]:
    """Output ``(H, W)`` of :func:`resize_frames` for a source of ``height x width``.

    Rules:

    * ``size=None``: the source size, unchanged (no rounding).
    * ``size=int``, ``resize="fit"``: scale so the long side equals ``size`` keeping the aspect
      ratio, then round each side to the nearest multiple of ``multiple`` (at least one
      multiple). 1280x720 and 960x540 with ``size=1024`` both give 1024x576 (W x H).
    * ``size=(H, W)``, ``resize="fit"``: scale to fit inside ``(H, W)`` keeping the aspect ratio,
      then round each side as above (rounding can move a side slightly past the box when ``H``
      or ``W`` is not itself a multiple).
    * ``size=(H, W)``, ``resize="crop"``: exactly ``(H, W)`` (scale to cover, centre crop);
      ``multiple`` is not applied.

    Args:
        height: source height in pixels.
        width: source width in pixels.
        size: ``None``, the long side, or ``(H, W)``.
        resize: ``"fit"`` or ``"crop"``.
        multiple: sides are rounded to a multiple of this in ``"fit"`` mode (SVD needs 64).

    Returns:
        ``(H', W')``.
    """
    _check_size(size, resize, multiple)
    if size is None:
        return height, width
    if isinstance(size, int):
        scale = size / max(height, width)
    elif resize == "crop":
        return int(size[0]), int(size[1])
    else:
        scale = min(size[0] / height, size[1] / width)
    return _round_to_multiple(height * scale, multiple), _round_to_multiple(width * scale, multiple)


def resize_frames(
    frames: torch.Tensor,
    size: int | tuple[int, int] | None = None,
    resize: ResizeMode = "fit",
    multiple: int = 64,
    chunk: int = 16,
) -> torch.Tensor:
    """Resize a frame stack with antialiased bilinear interpolation (see :func:`target_size`).

    Resizing uses ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``, which
    averages over the source footprint when shrinking (area-like, no aliasing) and is bilinear
    when enlarging. ``"crop"`` scales the frames to cover ``(H, W)`` and takes the centre.
    Frames are processed ``chunk`` at a time so uint8 input is never fully expanded to float at
    the source size.

    Args:
        frames: ``(T, C, H, W)`` uint8 in [0, 255] or float in [0, 1].
        size: ``None``, the long side, or ``(H, W)``.
        resize: ``"fit"`` or ``"crop"``.
        multiple: rounding multiple for ``"fit"``.
        chunk: frames resized at once.

    Returns:
        ``(T, C, H', W')`` float32 in [0, 1].
    """
    if frames.ndim != 4:
        raise RecaptureError(f"frames must be (T, C, H, W), got shape {tuple(frames.shape)}")
    h, w = frames.shape[-2:]
    out_h, out_w = target_size(h, w, size, resize, multiple)
    if resize == "crop" and size is not None:
        scale = max(out_h / h, out_w / w)
        cover_h, cover_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    else:
        cover_h, cover_w = out_h, out_w
    top, left = (cover_h - out_h) // 2, (cover_w - out_w) // 2
    out = torch.empty(frames.shape[0], frames.shape[1], out_h, out_w, dtype=torch.float32)
    for i in range(0, frames.shape[0], chunk):
        x = frames[i : i + chunk]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if (cover_h, cover_w) != (h, w):
            x = F.interpolate(
                x, size=(cover_h, cover_w), mode="bilinear", antialias=True, align_corners=False
            )
        out[i : i + chunk] = x[..., top : top + out_h, left : left + out_w].clamp(0.0, 1.0)
    return out
