"""VBench dimensions, computed natively with pluggable backbones (see ``backbones.py``).

Frames are first quantised to 8 bits (VBench reads them from a saved video). The functional API
returns VBench's raw values in [0, 1]; the Metric classes (``vbench_metrics.py``) return percentages (x100) like the
ReCapture paper's Table 1. Aggregation over videos follows VBench: subject/background consistency
and object class are averaged over all frame pairs / frames of all videos; the other dimensions
are averaged over videos.

* subject / background consistency: features f_t of each frame, L2-normalised;
  s_t = (max(0, cos(f_{t-1}, f_t)) + max(0, cos(f_0, f_t))) / 2 for t >= 1.
* temporal flickering: (255 - mean_t mean|F_{t+1} - F_t|) / 255 on 0..255 levels.
* motion smoothness: interpolate the midpoint of each pair of even frames with a frame interpolator
  (AMT-S in VBench), compare with the odd frames: (255 - mean abs diff) / 255.
* dynamic degree: frames every ``max(1, round(fps / 8))``; per pair the mean of the top 5% optical
  flow magnitudes; a video is dynamic if at least ``round(4 N / 16)`` pairs exceed
  ``6 * min(H, W) / 256`` (N = sampled frames); the dimension is the fraction of dynamic videos.
* aesthetic quality: mean over frames of LAION score / 10.
* imaging quality: MUSIQ-SPAQ per frame (longer side capped at 512), mean / 100.
* object class: fraction of frames in which the given COCO class is detected (GRiT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recapture.metrics.common import to_uint8_levels
from recapture.utils import RecaptureError, check_video

FeatureFn = Callable[[Tensor], Tensor]  # (N, 3, H, W) in [0, 1] -> (N, D)
Interpolator = Callable[[Tensor, Tensor], Tensor]  # (1, 3, H, W) x2 in [0, 1] -> (1, 3, H, W) midpoint
FlowFn = Callable[[Tensor, Tensor], Tensor]  # (1, 3, H, W) x2 in [0, 1] -> (1, 2, H', W') flow in pixels

NO_INTERPOLATOR = (
    "motion smoothness needs a frame interpolator: supply a callable (frame0, frame1) -> midpoint "
    "(VBench uses AMT-S; its code and amt-s.pth are not bundled), e.g. --weights.interpolator 'pkg.module:factory'"
)
NO_FLOW = (
    "dynamic degree needs an optical-flow model: supply a callable (img1, img2) -> flow (1, 2, H, W) "
    "(VBench uses RAFT raft-things), e.g. --weights.flow recapture.metrics.flow:raft_large (needs torchvision from the "
    "vbench extra and RECAPTURE_RAFT_WEIGHTS) or your own 'pkg.module:factory'"
)


def _frames(video: Tensor) -> Tensor:
    """Check a single video ``(T, 3, H, W)`` and quantise it to 8-bit levels, back in [0, 1]."""
    check_video(video, "video", fix="pass one video (not a batch), float in [0, 1]")
    return (to_uint8_levels(video) / 255).float()


def _call(fn: Callable[..., Any], *frames: Tensor) -> Tensor:
    """Call a model on frames moved to the model's device (when it is a module with parameters)."""
    param = next(fn.parameters(), None) if isinstance(fn, nn.Module) else None
    if param is not None:
        frames = tuple(f.to(param.device) for f in frames)
    return fn(*frames)


def _features(video: Tensor, extractor: FeatureFn, chunk: int) -> Tensor:
    chunks = [_call(extractor, video[s : s + chunk]).float().cpu() for s in range(0, video.shape[0], chunk)]
    return torch.cat(chunks)


def consistency_scores(features: Tensor) -> Tensor:
    """VBench's per-frame consistency s_t from frame features.

    Args:
        features: ``(T, D)`` features of consecutive frames.

    Returns:
        ``(T - 1,)`` float64 values s_t, t = 1 .. T-1.
    """
    f = F.normalize(features.double(), dim=-1, p=2)
    prev = F.cosine_similarity(f[:-1], f[1:], dim=-1).clamp(min=0)
    first = F.cosine_similarity(f[:1].expand_as(f[1:]), f[1:], dim=-1).clamp(min=0)
    return (prev + first) / 2


def feature_consistency(video: Tensor, extractor: FeatureFn, chunk: int = 16) -> Tensor:
    """Per-pair consistency s_t of one video (subject: DINO, background: CLIP).

    Args:
        video: ``(T, 3, H, W)`` in [0, 1].
        extractor: frames -> features, e.g. :class:`~recapture.metrics.backbones.DinoFeatures`.
        chunk: frames per forward pass.

    Returns:
        ``(T - 1,)`` float64; the video's score is their mean.
    """
    return consistency_scores(_features(_frames(video), extractor, chunk))


def temporal_flickering(video: Tensor) -> float:
    """VBench temporal flickering of one video (1 for a constant video).

    Args:
        video: ``(T, 3, H, W)`` in [0, 1], ``T >= 2``.

    Returns:
        ``(255 - mean_t MAE_t) / 255``.
    """
    if video.shape[0] < 2:
        raise RecaptureError(f"temporal flickering needs at least 2 frames, got {video.shape[0]}")
    v = to_uint8_levels(_frames(video))
    mae = (v[1:] - v[:-1]).abs().mean(dim=(1, 2, 3))
    return float((255.0 - mae.mean()) / 255.0)


def motion_smoothness(video: Tensor, interpolator: Interpolator | None) -> float:
    """VBench motion smoothness of one video with a frame interpolator (AMT-S in VBench).

    Args:
        video: ``(T, 3, H, W)`` in [0, 1], ``T >= 3``.
        interpolator: ``(frame0, frame1) -> midpoint``, each ``(1, 3, H, W)`` in [0, 1]. AMT-S code
            and weights (``amt-s.pth``) are not part of recapture: wrap them in such a callable.

    Returns:
        ``(255 - mean abs diff) / 255`` between interpolated midpoints and the odd frames.
    """
    if interpolator is None:
        raise RecaptureError(NO_INTERPOLATOR)
    v = _frames(video)
    even, odd = v[0::2], v[1::2]
    if even.shape[0] < 2:
        raise RecaptureError(f"motion smoothness needs at least 3 frames, got {v.shape[0]}")
    diffs = []
    with torch.no_grad():
        for i in range(even.shape[0] - 1):
            mid = _call(interpolator, even[i : i + 1], even[i + 1 : i + 2])
            mid = to_uint8_levels(mid.detach().cpu().reshape(odd[i].shape))
            diffs.append((mid - to_uint8_levels(odd[i])).abs().mean())
    return float((255.0 - torch.stack(diffs).mean()) / 255.0)


def dynamic_degree_indices(num_frames: int, fps: float) -> list[int]:
    """Frames VBench's dynamic degree looks at: every ``max(1, round(fps / 8))``-th, from 0.

    Args:
        num_frames: frames in the video.
        fps: the video's frame rate (container fps).

    Returns:
        the sampled frame indices.
    """
    if fps is None or fps <= 0:
        raise RecaptureError(f"dynamic degree needs the video's fps (> 0), got {fps!r}; pass --fps")
    return list(range(0, num_frames, max(1, round(fps / 8))))


def dynamic_thresholds(
    height: int, width: int, num_sampled: int, fps: float = 8.0, low_fps_factor: bool = False
) -> tuple[float, int]:
    """Flow threshold and required count of moving pairs.

    Args:
        height: frame height.
        width: frame width.
        num_sampled: frames kept by :func:`dynamic_degree_indices`.
        fps: the video's fps (only used with ``low_fps_factor``).
        low_fps_factor: multiply the threshold by ``max(1, 8 / fps)`` as newer VBench versions
            do (off by default: the ``vbench`` 0.1.5 recipe).

    Returns:
        ``(6 * min(H, W) / 256 [* factor], round(4 * num_sampled / 16))``.
    """
    factor = max(1.0, 8.0 / fps) if low_fps_factor else 1.0
    return factor * 6.0 * min(height, width) / 256.0, round(4 * num_sampled / 16.0)


def flow_score(flow: Tensor) -> float:
    """Mean of the top 5% flow magnitudes (``int(0.05 H W)`` pixels) of one flow field.

    Args:
        flow: ``(1, 2, H, W)`` or ``(2, H, W)`` in pixels.

    Returns:
        the score (pixels).
    """
    f = flow.reshape(2, *flow.shape[-2:]).double()
    rad = f.pow(2).sum(0).sqrt().flatten()
    k = int(rad.numel() * 0.05)
    if k == 0:
        return float("nan")
    return float(rad.topk(k).values.mean())


def dynamic_degree(video: Tensor, fps: float, flow: FlowFn | None, low_fps_factor: bool = False) -> bool:
    """Whether one video is dynamic by VBench's rule.

    Args:
        video: ``(T, 3, H, W)`` in [0, 1].
        fps: the video's frame rate.
        flow: ``(img1, img2) -> flow``: ``(1, 3, H, W)`` in [0, 1] each, flow ``(1, 2, H', W')`` in
            pixels (VBench: RAFT raft-things, 20 iterations, on frames padded to multiples of 8;
            the top-5% cut uses the returned flow's pixel count).
        low_fps_factor: see :func:`dynamic_thresholds`.

    Returns:
        True if the video counts as dynamic.
    """
    if flow is None:
        raise RecaptureError(NO_FLOW)
    v = _frames(video)
    idx = dynamic_degree_indices(v.shape[0], fps)
    frames = v[idx]
    thres, count_num = dynamic_thresholds(v.shape[-2], v.shape[-1], len(idx), fps, low_fps_factor)
    count = 0
    with torch.no_grad():
        for i in range(len(idx) - 1):
            if flow_score(_call(flow, frames[i : i + 1], frames[i + 1 : i + 2])) > thres:
                count += 1
            if count >= count_num:
                return True
    return False  # as VBench: a video with no sampled pair is static


def aesthetic_quality(video: Tensor, scorer: FeatureFn, chunk: int = 16) -> float:
    """Mean over frames of the LAION aesthetic score / 10.

    Args:
        video: ``(T, 3, H, W)`` in [0, 1].
        scorer: frames -> ``(N,)`` scores 0..10 (:class:`~recapture.metrics.backbones.AestheticScorer`).
        chunk: frames per forward pass.

    Returns:
        the video's value.
    """
    return float(_features(_frames(video), scorer, chunk).double().reshape(-1).mean() / 10)


def imaging_quality(video: Tensor, musiq: FeatureFn, max_side: int = 512) -> float:
    """Mean over frames of MUSIQ-SPAQ (0..100) / 100, the longer side capped at ``max_side``.

    Args:
        video: ``(T, 3, H, W)`` in [0, 1].
        musiq: ``(1, 3, H, W)`` in [0, 1] -> score 0..100 (see :func:`~recapture.metrics.backbones.load_musiq`).
        max_side: frames whose longer side exceeds this are resized (bilinear, no antialias).

    Returns:
        the video's value.
    """
    v = _frames(video)
    h, w = v.shape[-2:]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        v = F.interpolate(
            v, size=(int(scale * h), int(scale * w)), mode="bilinear", align_corners=False, antialias=False
        )
    scores = []
    with torch.no_grad():
        for t in range(v.shape[0]):
            scores.append(float(torch.as_tensor(_call(musiq, v[t : t + 1])).reshape(-1)[0]))
    return sum(scores) / len(scores) / 100.0


def object_class_hits(
    video: Tensor, class_name: str, detector: Callable[[Any], set[str]] | None
) -> tuple[int, int]:
    """Frames of one video in which ``class_name`` is detected.

    Args:
        video: ``(T, 3, H, W)`` in [0, 1].
        class_name: COCO class name (e.g. ``"dog"``).
        detector: ``uint8 (H, W, 3) numpy frame -> set of class names`` (GRiT via ``load_grit``).

    Returns:
        ``(hits, frames)``.
    """
    if detector is None:
        raise RecaptureError(
            "object class needs a detector: pass --weights.grit (GRiT weights; needs the vbench extra)"
        )
    if not class_name:
        raise RecaptureError("object class needs the COCO class to look for: pass --object_class NAME")
    v = to_uint8_levels(_frames(video)).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    hits = sum(class_name in detector(frame) for frame in v)
    return int(hits), int(v.shape[0])
