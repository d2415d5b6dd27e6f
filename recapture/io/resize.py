"""Output-size rules that keep the aspect ratio, and antialiased resizing of frames.

:func:`plan_resize` is the pure arithmetic (output size, scale factor, crop or pad box);
:func:`apply_resize` carries a plan out on frames; :func:`resize_frames` does both for a stack.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from recapture.utils import RecaptureError

logger = logging.getLogger(__name__)

ResizeMode = Literal["crop", "pad"]
_MODES = ("crop", "pad")


@dataclass(frozen=True)
class ResizePlan:
    """How a ``source`` frame becomes an ``output`` frame: scale both sides by ``scale``, then crop or pad.

    Attributes:
        source: ``(H, W)`` of the input frame.
        output: ``(H', W')`` of the result.
        scale: factor applied to both sides (the aspect ratio is kept); > 1 enlarges.
        scaled: ``(H, W)`` after scaling (``source * scale``, rounded), before cropping/padding.
        crop: ``(top, left, height, width)`` window of the scaled frame that is kept (the whole
            scaled frame when nothing is cropped).
        pad: ``(top, bottom, left, right)`` black rows/columns added around the kept window.
    """

    source: tuple[int, int]
    output: tuple[int, int]
    scale: float
    scaled: tuple[int, int]
    crop: tuple[int, int, int, int]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def upscales(self) -> bool:
        """Whether the frame is enlarged (detail is invented: expect blur)."""
        return self.scale > 1.0 + 1e-9

    @property
    def is_identity(self) -> bool:
        """Whether the plan leaves the frame unchanged."""
        return self.output == self.source == self.scaled

    def upscale_message(self) -> str | None:
        """The warning to log when the plan enlarges the frame, else ``None``."""
        if not self.upscales:
            return None
        (h, w), (oh, ow) = self.source, self.output
        return (
            f"upscaling {w}x{h} by {self.scale:.3g}x to {ow}x{oh}: expect blur; "
            "use a larger source or a smaller --data.size"
        )


def _round_to_multiple(x: float, multiple: int) -> int:
    # half-up rounding (Python's round() rounds halves to even), never below one multiple
    return max(multiple, int(math.floor(x / multiple + 0.5)) * multiple)


def _check_size(size: int | tuple[int, int] | None, resize: str, multiple: int) -> None:
    if resize not in _MODES:
        raise RecaptureError(
            f"resize={resize!r} is not a resize mode; use 'crop' (cover the size, centre-crop the rest) "
            "or 'pad' (fit inside, pad with black)"
        )
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise RecaptureError(f"multiple={multiple!r} must be a positive integer (1 disables rounding)")
    if size is None:
        return
    sides = (size,) if isinstance(size, int) else tuple(size)
    if len(sides) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sides):
        raise RecaptureError(
            f"size={size!r} must be a positive int (long side) or a pair of positive ints (H, W)"
        )
    if isinstance(size, int) and size < multiple:
        raise RecaptureError(
            f"size={size} is below the smallest long side, {multiple} (a long side is rounded to a multiple "
            f"of {multiple}): use {multiple} or more, or an exact pair [H, W]"
        )


def plan_resize(
    height: int,
    width: int,
    size: int | tuple[int, int] | None,
    resize: ResizeMode = "crop",
    multiple: int = 64,
) -> ResizePlan:
    """Plan the resize of a ``height x width`` frame; the aspect ratio is always kept.

    Output size:

    * ``size=None``: the source size, unchanged (no scaling, no rounding; SVD needs the source to
      be a multiple of 64 already).
    * ``size=int``: ``size`` is the **long** side (the width of a landscape video), rounded to
      the nearest multiple of ``multiple``; the short side is ``short * size / long`` rounded to
      the nearest multiple of ``multiple`` (halves up, at least one multiple). 1280x720 at 512
      gives 512x320; 640x272 at 192 gives 192x64; 40x30 at 192 gives 192x128 (W x H).
    * ``size=(H, W)``: exactly ``(H, W)``; ``multiple`` is not applied.

    How the picture fills it:

    * ``"crop"``: scale (both sides by one factor) just enough to cover the output, then cut the
      overflow equally from both ends of the side that overflows (centre crop): 1280x720 at 512
      is scaled to 569x320 and 28 + 29 columns are cut.
    * ``"pad"``: scale to fit inside the output, then add black bars equally on both ends
      (1280x720 at 512: scaled to 512x288, 16 black rows above and below).

    A scale factor above 1 enlarges the picture (see :meth:`ResizePlan.upscale_message`).

    Args:
        height: source height in pixels.
        width: source width in pixels.
        size: ``None``, the long side, or ``(H, W)``.
        resize: ``"crop"`` or ``"pad"``.
        multiple: sides are rounded to a multiple of this for an int ``size`` (SVD needs 64).

    Returns:
        the :class:`ResizePlan`.
    """
    _check_size(size, resize, multiple)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (height, width)):
        raise RecaptureError(f"cannot resize a {width}x{height} frame; frames need at least 1x1 pixels")
    if size is None:
        return ResizePlan((height, width), (height, width), 1.0, (height, width), (0, 0, height, width))
    if isinstance(size, int):
        factor = size / max(height, width)
        out_h, out_w = (
            _round_to_multiple(height * factor, multiple),
            _round_to_multiple(width * factor, multiple),
        )
    else:
        out_h, out_w = int(size[0]), int(size[1])
    pick = max if resize == "crop" else min
    scale = pick(out_h / height, out_w / width)
    # the side that sets the scale lands exactly on the output; the other is rounded and clamped
    scaled_h, scaled_w = (max(1, round(height * scale)), max(1, round(width * scale)))
    if resize == "crop":
        scaled_h, scaled_w = max(scaled_h, out_h), max(scaled_w, out_w)
        top, left = (scaled_h - out_h) // 2, (scaled_w - out_w) // 2
        return ResizePlan(
            (height, width), (out_h, out_w), scale, (scaled_h, scaled_w), (top, left, out_h, out_w)
        )
    scaled_h, scaled_w = min(scaled_h, out_h), min(scaled_w, out_w)
    top, left = (out_h - scaled_h) // 2, (out_w - scaled_w) // 2
    pad = (top, out_h - scaled_h - top, left, out_w - scaled_w - left)
    return ResizePlan(
        (height, width), (out_h, out_w), scale, (scaled_h, scaled_w), (0, 0, scaled_h, scaled_w), pad
    )


def target_size(
    height: int,
    width: int,
    size: int | tuple[int, int] | None,
    resize: ResizeMode = "crop",
    multiple: int = 64,
) -> tuple[int, int]:
    """Output ``(H', W')`` for a ``height x width`` source: ``plan_resize(...).output``."""
    return plan_resize(height, width, size, resize, multiple).output


def apply_resize(frames: torch.Tensor, plan: ResizePlan) -> torch.Tensor:
    """Carry out ``plan``: antialiased bilinear scaling, then the crop or the black padding.

    ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` averages over the source
    footprint when shrinking (like PIL's bilinear, no aliasing) and is bilinear when enlarging.

    Args:
        frames: ``(N, C, H, W)`` uint8 in [0, 255] or float in [0, 1], ``(H, W) == plan.source``.
        plan: from :func:`plan_resize`.

    Returns:
        ``(N, C, H', W')`` float32 in [0, 1], ``(H', W') == plan.output``.
    """
    if frames.ndim != 4 or tuple(frames.shape[-2:]) != plan.source:
        raise RecaptureError(
            f"frames must be (N, C, {plan.source[0]}, {plan.source[1]}) for this resize plan, "
            f"got shape {tuple(frames.shape)}"
        )
    x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    if plan.scaled != plan.source:
        x = F.interpolate(x, size=plan.scaled, mode="bilinear", antialias=True, align_corners=False)
    top, left, h, w = plan.crop
    x = x[..., top : top + h, left : left + w]
    if any(plan.pad):
        p_top, p_bottom, p_left, p_right = plan.pad
        x = F.pad(x, (p_left, p_right, p_top, p_bottom))
    return x.clamp(0.0, 1.0)


def resize_frames(
    frames: torch.Tensor,
    size: int | tuple[int, int] | None = None,
    resize: ResizeMode = "crop",
    multiple: int = 64,
    chunk: int = 16,
) -> torch.Tensor:
    """Resize a frame stack keeping the aspect ratio (rules: :func:`plan_resize`).

    Frames are processed ``chunk`` at a time so uint8 input is never fully expanded to float at
    the source size. An enlargement is logged as a warning naming the factor.

    Args:
        frames: ``(T, C, H, W)`` uint8 in [0, 255] or float in [0, 1].
        size: ``None``, the long side, or ``(H, W)``.
        resize: ``"crop"`` or ``"pad"``.
        multiple: rounding multiple for an int ``size``.
        chunk: frames resized at once.

    Returns:
        ``(T, C, H', W')`` float32 in [0, 1].
    """
    if frames.ndim != 4:
        raise RecaptureError(f"frames must be (T, C, H, W), got shape {tuple(frames.shape)}")
    plan = plan_resize(int(frames.shape[-2]), int(frames.shape[-1]), size, resize, multiple)
    message = plan.upscale_message()
    if message:
        logger.warning(message)
    out = torch.empty(frames.shape[0], frames.shape[1], *plan.output, dtype=torch.float32)
    for i in range(0, frames.shape[0], chunk):
        out[i : i + chunk] = apply_resize(frames[i : i + chunk], plan)
    return out
