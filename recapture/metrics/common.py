"""Shared pieces of the metrics package: shape checks, quantisation, resizing, a per-video mean Metric.

Conventions: video ``(B, T, C, H, W)`` or ``(T, C, H, W)`` float in [0, 1]; mask ``(..., 1, H, W)``
bool or {0, 1} (values > 0.5 count as inside).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from recapture.utils import RecaptureError, check_video

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def as_video_batch(video: Tensor, name: str = "video") -> Tensor:
    """Return ``video`` as a batch of videos.

    Args:
        video: ``(B, T, C, H, W)`` or ``(T, C, H, W)``.
        name: how the error message calls the tensor.

    Returns:
        ``(B, T, C, H, W)`` (a view; a batch of one for 4-D input).
    """
    check_video(video, name, channels=None, batched=None, fix="add or remove the batch axis")
    return video.unsqueeze(0) if video.ndim == 4 else video


def check_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Check that prediction and target are video batches of the same shape.

    Args:
        pred: ``(B, T, C, H, W)`` or ``(T, C, H, W)``.
        target: same shape as ``pred``.

    Returns:
        both as ``(B, T, C, H, W)``.
    """
    p, t = as_video_batch(pred, "pred"), as_video_batch(target, "target")
    if p.shape != t.shape:
        raise RecaptureError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape; "
            "resize or trim them to the same frames and size first"
        )
    return p, t


def check_mask(mask: Tensor, video: Tensor) -> Tensor:
    """Check a mask against a video batch and return it as bool.

    Args:
        mask: ``(B, T, 1, H, W)`` or ``(T, 1, H, W)``, bool or {0, 1}; values > 0.5 are inside.
        video: ``(B, T, C, H, W)``.

    Returns:
        ``(B, T, 1, H, W)`` bool.
    """
    b, t, _, h, w = video.shape
    m = mask.unsqueeze(0) if mask.ndim == 4 else mask
    if m.shape != (b, t, 1, h, w):
        raise RecaptureError(
            f"mask has shape {tuple(mask.shape)} but the video is {tuple(video.shape)}; "
            f"the mask must be (B, T, 1, H, W) = {(b, t, 1, h, w)} (one channel, same frames and size)"
        )
    return m > 0.5 if m.dtype != torch.bool else m


def to_uint8_levels(frames: Tensor) -> Tensor:
    """Quantise float frames in [0, 1] to the 0..255 levels a saved 8-bit video holds.

    Args:
        frames: ``(..., C, H, W)`` float in [0, 1].

    Returns:
        same shape, float64 with integer values in 0..255.
    """
    return (frames.double().clamp(0, 1) * 255).round()


def resize_shorter_side(images: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """Resize so that the shorter side is ``size`` (torchvision ``Resize(size)``, antialias off).

    Args:
        images: ``(N, C, H, W)`` float.
        size: target length of the shorter side.
        mode: ``"bilinear"`` or ``"bicubic"``.

    Returns:
        ``(N, C, H', W')``; the longer side is ``int(size * long / short)`` as torchvision does.
    """
    h, w = images.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)
    new_hw = (size, new_long) if h <= w else (new_long, size)
    if (h, w) == new_hw:
        return images
    return F.interpolate(images, size=new_hw, mode=mode, align_corners=False, antialias=False)


def center_crop(images: Tensor, size: int) -> Tensor:
    """Crop the centre ``size x size`` (torchvision ``CenterCrop`` rounding).

    Args:
        images: ``(N, C, H, W)`` with ``H, W >= size``.
        size: side of the square crop.

    Returns:
        ``(N, C, size, size)``.
    """
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise RecaptureError(f"cannot centre-crop {size}x{size} from {h}x{w} images; resize them first")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Channel-wise ``(x - mean) / std``.

    Args:
        images: ``(N, C, H, W)``.
        mean: ``C`` values.
        std: ``C`` values.

    Returns:
        ``(N, C, H, W)``.
    """
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


class MergeableMetric(Metric):
    """A Metric whose sum-reduced states can be merged from another instance (per-video -> total)."""

    def merge_state(self, incoming_state: dict | Metric) -> None:
        """Add another metric's states; it then counts as updated (no compute-before-update warning)."""
        super().merge_state(incoming_state)
        if isinstance(incoming_state, Metric):
            self._update_count += incoming_state._update_count
        self._computed = None


class VideoMeanMetric(MergeableMetric):
    """Mean over videos of a per-video value; videos whose value is NaN are left out (nanmean).

    Subclasses implement ``update`` and call :meth:`_add_videos` with a ``(B,)`` tensor. States are
    a float64 sum and a count, reduced by summation across processes.
    """

    is_differentiable = False
    full_state_update = False
    scale: float = 1.0  # 100 for VBench dimensions (reported as percentages)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add_videos(self, values: Tensor) -> None:
        values = values.detach().to(device=self.total.device, dtype=torch.float64).reshape(-1)
        ok = ~torch.isnan(values)
        self.total += values[ok].sum()
        self.count += ok.sum()

    def compute(self) -> Tensor:
        """Return the mean over videos (NaN when no video had a value)."""
        if int(self.count) == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        return self.total / self.count * self.scale
