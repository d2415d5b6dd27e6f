"""VBench dimensions as ``torchmetrics.Metric`` classes, in percent (x100) like the paper's Table 1.

Each ``update(video)`` takes ``(B, T, 3, H, W)`` or ``(T, 3, H, W)`` videos in [0, 1]; the formulas
are in :mod:`recapture.metrics.vbench`. Subject/background consistency and object class average
over all frame pairs / frames of all videos (as VBench); the others over videos.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from recapture.metrics.common import VideoMeanMetric, as_video_batch
from recapture.metrics.registry import register_metric
from recapture.metrics.vbench import (
    FeatureFn,
    FlowFn,
    Interpolator,
    aesthetic_quality,
    dynamic_degree,
    feature_consistency,
    imaging_quality,
    motion_smoothness,
    object_class_hits,
    temporal_flickering,
)


class _PercentMetric(VideoMeanMetric):
    higher_is_better = True
    scale = 100.0

    def _videos(self, video: Tensor) -> Tensor:
        return as_video_batch(video, "video")


@register_metric("subject_consistency", model="dino", aliases=("vbench",))
class SubjectConsistency(_PercentMetric):
    """VBench subject consistency (%): DINO features, averaged over all frame pairs of all videos.

    Args:
        extractor: frames -> features (:class:`~recapture.metrics.backbones.DinoFeatures`).

    ``update(video)``: ``(B, T, 3, H, W)`` or ``(T, 3, H, W)`` in [0, 1].
    """

    def __init__(self, extractor: FeatureFn, **kwargs) -> None:
        super().__init__(**kwargs)
        self.extractor = extractor

    def update(self, video: Tensor) -> None:
        """Add videos."""
        for v in self._videos(video):
            self._add_videos(feature_consistency(v, self.extractor))


@register_metric("background_consistency", model="clip", aliases=("vbench",))
class BackgroundConsistency(SubjectConsistency):
    """VBench background consistency (%): as subject consistency with CLIP ViT-B/32 embeddings.

    Args:
        extractor: frames -> features (:class:`~recapture.metrics.backbones.ClipImageFeatures`).
    """


@register_metric("temporal_flickering", aliases=("vbench",))
class TemporalFlickering(_PercentMetric):
    """VBench temporal flickering (%), mean over videos. ``update(video)`` as the others."""

    def update(self, video: Tensor) -> None:
        """Add videos."""
        self._add_videos(torch.tensor([temporal_flickering(v) for v in self._videos(video)]))


@register_metric("motion_smoothness", model="interpolator", aliases=("vbench",))
class MotionSmoothness(_PercentMetric):
    """VBench motion smoothness (%), mean over videos.

    Args:
        interpolator: ``(frame0, frame1) -> midpoint`` (AMT-S in VBench; supply your own wrapper).
    """

    def __init__(self, interpolator: Interpolator, **kwargs) -> None:
        super().__init__(**kwargs)
        self.interpolator = interpolator

    def update(self, video: Tensor) -> None:
        """Add videos."""
        self._add_videos(torch.tensor([motion_smoothness(v, self.interpolator) for v in self._videos(video)]))


@register_metric(
    "dynamic_degree", model="flow", inputs=("pred", "fps"), options={"fps": "fps"}, aliases=("vbench",)
)
class DynamicDegree(_PercentMetric):
    """VBench dynamic degree (%): the fraction of dynamic videos.

    Args:
        flow: ``(img1, img2) -> flow`` (RAFT in VBench).
        fps: default frame rate of the videos (``update`` can override it per call).
        low_fps_factor: see :func:`dynamic_thresholds`.
    """

    def __init__(
        self, flow: FlowFn, fps: float | None = None, low_fps_factor: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.flow = flow
        self.fps = fps
        self.low_fps_factor = low_fps_factor

    def update(self, video: Tensor, fps: float | None = None) -> None:
        """Add videos (all at ``fps``, or the default fps)."""
        rate = fps if fps is not None else self.fps
        flags = [dynamic_degree(v, rate, self.flow, self.low_fps_factor) for v in self._videos(video)]
        self._add_videos(torch.tensor(flags, dtype=torch.float64))


@register_metric("aesthetic_quality", model="aesthetic", aliases=("vbench",))
class AestheticQuality(_PercentMetric):
    """VBench aesthetic quality (%), mean over videos.

    Args:
        scorer: frames -> LAION scores 0..10 (:class:`~recapture.metrics.backbones.AestheticScorer`).
    """

    def __init__(self, scorer: FeatureFn, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scorer = scorer

    def update(self, video: Tensor) -> None:
        """Add videos."""
        self._add_videos(torch.tensor([aesthetic_quality(v, self.scorer) for v in self._videos(video)]))


@register_metric("imaging_quality", model="musiq", aliases=("vbench",))
class ImagingQuality(_PercentMetric):
    """VBench imaging quality (%), mean over videos.

    Args:
        musiq: MUSIQ-SPAQ (:func:`~recapture.metrics.backbones.load_musiq`).
    """

    def __init__(self, musiq: FeatureFn, **kwargs) -> None:
        super().__init__(**kwargs)
        self.musiq = musiq

    def update(self, video: Tensor) -> None:
        """Add videos."""
        self._add_videos(torch.tensor([imaging_quality(v, self.musiq) for v in self._videos(video)]))


@register_metric("object_class", model="grit", options={"class_name": "object_class"})
class ObjectClass(_PercentMetric):
    """VBench object class (%): detected frames / all frames, over all videos.

    Args:
        detector: frame -> class names (:func:`~recapture.metrics.backbones.load_grit`).
        class_name: default COCO class (``update`` can override it per call).
    """

    def __init__(self, detector: Callable[[Any], set[str]], class_name: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.detector = detector
        self.class_name = class_name

    def update(self, video: Tensor, class_name: str | None = None) -> None:
        """Add videos (all showing ``class_name``)."""
        for v in self._videos(video):
            hits, n = object_class_hits(v, class_name or self.class_name, self.detector)
            self.total += hits
            self.count += n
