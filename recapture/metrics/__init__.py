"""Metrics: Kubric-4D image metrics (GCD recipe), LPIPS, VBench dimensions and camera accuracy.

Functional API (per frame / per video) plus ``torchmetrics.Metric`` classes that accept
``(B, T, C, H, W)`` or ``(T, C, H, W)`` videos in [0, 1] and optional ``(..., 1, H, W)`` masks.
:func:`compute_metrics` computes a named set in one call; ``recapture evaluate``
(:func:`recapture.commands.evaluate.evaluate`) runs it over files or folders. Each metric and each
model it needs is registered where it is defined (:mod:`recapture.metrics.registry`).
"""

from recapture.metrics.camera import (
    CameraAccuracy,
    camera_errors,
    read_colmap_images,
    read_poses,
    relative_to_first,
)
from recapture.metrics.collection import (
    METRIC_NAMES,
    MetricModels,
    MetricSet,
    MetricWeights,
    compute_metrics,
    parse_metric_names,
)
from recapture.metrics.image import (
    VideoPSNR,
    VideoSSIM,
    masked_psnr,
    masked_ssim,
    psnr,
    ssim,
    ssim_map,
    video_psnr,
    video_ssim,
)
from recapture.metrics.lpips import LPIPS, VideoLPIPS, load_lpips, lpips_frames, video_lpips
from recapture.metrics.registry import register_metric, register_model
from recapture.metrics.vbench_metrics import (
    AestheticQuality,
    BackgroundConsistency,
    DynamicDegree,
    ImagingQuality,
    MotionSmoothness,
    ObjectClass,
    SubjectConsistency,
    TemporalFlickering,
)

__all__ = [
    "LPIPS",
    "METRIC_NAMES",
    "AestheticQuality",
    "BackgroundConsistency",
    "CameraAccuracy",
    "DynamicDegree",
    "ImagingQuality",
    "MetricModels",
    "MetricSet",
    "MetricWeights",
    "MotionSmoothness",
    "ObjectClass",
    "SubjectConsistency",
    "TemporalFlickering",
    "VideoLPIPS",
    "VideoPSNR",
    "VideoSSIM",
    "camera_errors",
    "compute_metrics",
    "load_lpips",
    "lpips_frames",
    "masked_psnr",
    "masked_ssim",
    "parse_metric_names",
    "psnr",
    "read_colmap_images",
    "read_poses",
    "register_metric",
    "register_model",
    "relative_to_first",
    "ssim",
    "ssim_map",
    "video_lpips",
    "video_psnr",
    "video_ssim",
]
