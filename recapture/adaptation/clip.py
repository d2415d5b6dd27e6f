"""CLIP image preprocessing exactly as the SVD pipeline does it (torch only, no torchvision).

The feature extractor of the SVD parts is ``transformers.CLIPImageProcessorPil`` (the default
``CLIPImageProcessor`` backend needs torchvision, which must not be imported here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import CLIPImageProcessorPil

from recapture.utils import check_video

__all__ = ["CLIP_MEAN", "CLIP_SIZE", "CLIP_STD", "clip_preprocess", "default_feature_extractor"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224


def default_feature_extractor() -> CLIPImageProcessorPil:
    """CLIP's normalisation as a feature extractor (for sets saved without one)."""
    return CLIPImageProcessorPil(image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def _resize_antialiased(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The SVD pipeline's antialiased resize (Gaussian blur then bicubic) for exact conditioning parity."""
    try:
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )
    except ImportError:  # pragma: no cover - private helper renamed upstream
        return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
    return _resize_with_antialiasing(images, size)


def clip_preprocess(images: torch.Tensor) -> torch.Tensor:
    """Resize to 224x224 and normalise with CLIP's mean/std exactly as the SVD pipeline does.

    The resize runs in [-1, 1] (as the original implementation) with antialiasing; torch only.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].

    Returns:
        ``(B, 3, 224, 224)`` CLIP pixel values.
    """
    check_video(images, "clip_preprocess: images", first_axis="B", fix="add the batch axis to one image with [None]")
    x = images.float() * 2.0 - 1.0
    x = _resize_antialiased(x, (CLIP_SIZE, CLIP_SIZE))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(images.dtype)
