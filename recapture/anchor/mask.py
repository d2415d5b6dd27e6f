"""Validity-mask refinement: dilation that fills pinholes with real neighbours, then erosion."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["refine_mask"]


def refine_mask(
    frames: Tensor, mask: Tensor, depth: Tensor | None = None, erode: int = 0, dilate: int = 0
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Dilate the valid region (filling the new pixels), then erode it.

    * ``dilate=n`` grows the valid region by ``n`` pixels (a ``(2n+1)`` square) and fills each newly
      valid pixel with the mean colour / depth of the valid pixels in its window, so small pinholes
      close with real neighbouring content (never with black);
    * ``erode=n`` then shrinks it by ``n`` pixels, marking the unreliable rims of disocclusions as
      invalid (the image border is not treated as a hole).

    ``dilate=n, erode=n`` is a morphological closing: pinholes vanish, large holes keep their size.

    Args:
        frames: ``(T, C, H, W)``, 0 where ``mask`` is 0.
        mask: ``(T, 1, H, W)`` in {0, 1}.
        depth: optional ``(T, 1, H, W)``.
        erode: erosion radius in pixels.
        dilate: dilation radius in pixels.

    Returns:
        ``(frames, mask, depth)`` with frames and depth zeroed where the new mask is 0.
    """
    if dilate > 0:
        k = 2 * dilate + 1
        grown = F.max_pool2d(mask, k, stride=1, padding=dilate)
        weight = F.avg_pool2d(mask, k, stride=1, padding=dilate, count_include_pad=False)
        new = (grown > 0) & (mask == 0)
        safe = weight.clamp_min(1e-12)
        fill = F.avg_pool2d(frames * mask, k, stride=1, padding=dilate, count_include_pad=False) / safe
        frames = frames.where(~new, fill)
        if depth is not None:
            dfill = F.avg_pool2d(depth * mask, k, stride=1, padding=dilate, count_include_pad=False) / safe
            depth = depth.where(~new, dfill)
        mask = grown
    if erode > 0:
        mask = -F.max_pool2d(-mask, 2 * erode + 1, stride=1, padding=erode)
    frames = frames * mask
    depth = depth * mask if depth is not None else None
    return frames, mask, depth
