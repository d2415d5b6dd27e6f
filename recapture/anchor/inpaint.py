"""A classical baseline for the anchor's holes: per-frame OpenCV inpainting (Telea's fast marching method).

Used by ``recapture benchmark`` with ``kubric.ablation: true`` as the "anchor + inpainting" row: it
fills every invalid anchor pixel from its valid neighbours, frame by frame, with no learned prior
and no temporal model, so it shows what the video model adds over hole filling.
"""

from __future__ import annotations

import numpy as np
import torch

from recapture.utils import RecaptureError

__all__ = ["inpaint_telea"]


def inpaint_telea(frames: torch.Tensor, mask: torch.Tensor, radius: float = 3.0) -> torch.Tensor:
    """Fill the invalid pixels of every frame with ``cv2.inpaint(..., cv2.INPAINT_TELEA)``.

    Args:
        frames: ``(T, 3, H, W)`` in [0, 1] (the anchor video).
        mask: ``(T, 1, H, W)`` validity, 1 where the anchor saw a point (those pixels are kept).
        radius: inpainting neighbourhood radius in pixels.

    Returns:
        ``(T, 3, H, W)`` float in [0, 1] on the CPU (valid pixels unchanged up to 8-bit rounding).

    Raises:
        RecaptureError: OpenCV is not installed, or the shapes do not match.
    """
    if frames.ndim != 4 or frames.shape[1] != 3 or mask.shape != (frames.shape[0], 1, *frames.shape[2:]):
        raise RecaptureError(f"inpaint_telea: frames (T, 3, H, W) and mask (T, 1, H, W) expected, got "
                             f"{tuple(frames.shape)} and {tuple(mask.shape)}")
    try:
        import cv2
    except ImportError as err:
        raise RecaptureError(
            "the inpainting baseline needs OpenCV: pip install 'recapture[benchmark]' (opencv-python-headless), "
            "or set kubric.ablation: false"
        ) from err
    video = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    holes = (mask.detach().cpu()[:, 0] < 0.5).numpy().astype(np.uint8) * 255
    out = np.stack([cv2.inpaint(np.ascontiguousarray(f), h, radius, cv2.INPAINT_TELEA) for f, h in zip(video, holes, strict=True)])
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0
