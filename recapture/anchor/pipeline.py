"""Stage 1 end to end: depth -> scene scale -> scaled trajectory -> anchor render -> report, cached.

:func:`build_anchor` is what ``recapture anchor`` and the data module call; :func:`write_anchor_outputs`
(:mod:`recapture.anchor.outputs`) writes what a user looks at (anchor, mask, side-by-side preview,
trajectory, report).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from recapture.anchor.cache import load_entry, save_entry
from recapture.anchor.outputs import write_anchor_outputs
from recapture.anchor.render import AnchorVideo, render_anchor
from recapture.anchor.settings import FusionSettings, MaskSettings, SplatSettings
from recapture.depth.base import DepthEstimator, check_depth, check_frames, scene_scale
from recapture.utils import RecaptureError, hash_inputs

if TYPE_CHECKING:
    from recapture.cameras import Trajectory

log = logging.getLogger(__name__)

__all__ = ["AnchorConfig", "AnchorResult", "build_anchor", "preflight_message", "write_anchor_outputs"]

CACHE_VERSION = "anchor-v3"  # bump when rendering changes so stale entries are not reused


@dataclass
class AnchorConfig:
    """Anchor rendering settings (the ``anchor:`` section of a config).

    Attributes:
        mode: ``"hard"`` z-buffer splat (default) or differentiable ``"soft"`` splat.
        footprint: hard mode: odd splat size in pixels; 1 is exact, 3 closes pinholes on slanted
            or magnified surfaces and grows edges by a pixel into holes (never over visible pixels).
        fov_deg: horizontal field of view assumed for the source video when no K is known.
        mask_erode: shrink the valid region by this many pixels (drops unreliable hole rims).
        mask_dilate: grow the valid region by this many pixels, filling from valid neighbours.
        fuse_neighbors: beyond the paper (0 = off): also splat hidden static background from this
            many frames on each side, filling disocclusions with real pixels.
        min_coverage: warn before any diffusion runs when the valid fraction of the worst frame is
            below this (one badly covered frame is hallucinated even when the mean looks fine).
        soft_beta: soft mode depth sharpness.
        cache_dir: on-disk anchor cache; ``None`` disables caching.
        progress: progress bars over depth batches and rendered frames.
    """

    mode: Literal["hard", "soft"] = "hard"
    footprint: int = 1
    fov_deg: float = 60.0
    mask_erode: int = 0
    mask_dilate: int = 0
    fuse_neighbors: int = 0
    min_coverage: float = 0.6
    soft_beta: float = 50.0
    cache_dir: str | None = ".recapture_cache/anchors"
    progress: bool = True

    def splat_settings(self) -> SplatSettings:
        """``mode``, ``footprint`` and ``soft_beta`` for :func:`~recapture.anchor.render_anchor`."""
        return SplatSettings(mode=self.mode, footprint=self.footprint, soft_beta=self.soft_beta)

    def mask_settings(self) -> MaskSettings:
        """``mask_erode`` and ``mask_dilate`` for :func:`~recapture.anchor.render_anchor`."""
        return MaskSettings(erode=self.mask_erode, dilate=self.mask_dilate)

    def fusion_settings(self) -> FusionSettings:
        """``fuse_neighbors`` for :func:`~recapture.anchor.render_anchor`."""
        return FusionSettings(neighbors=self.fuse_neighbors)


@dataclass
class AnchorResult:
    """Everything stage 1 produced.

    Attributes:
        source: source video ``(T, 3, H, W)``.
        anchor: the anchor video and its validity mask.
        depth: source depth ``(T, 1, H, W)`` in depth units.
        K: target intrinsics ``(T, 3, 3)`` (the anchor video's cameras; zoom changes them).
        c2w: target poses ``(T, 4, 4)`` relative to each source frame, in depth units.
        trajectory: the trajectory as given (scene units).
        fps: frame rate of the source clip.
        depth_source: the depth estimator's name.
        scene_scale: depth units per scene unit (median depth of frame 0).
        report: the JSON report (see :func:`build_anchor`).
        K_source: source intrinsics ``(3, 3)``.
    """

    source: Tensor
    anchor: AnchorVideo
    depth: Tensor
    K: Tensor
    c2w: Tensor
    trajectory: Trajectory
    fps: float
    depth_source: str
    scene_scale: float
    report: dict[str, Any]
    K_source: Tensor | None = None


def preflight_message(
    coverage: Sequence[float] | Tensor | float, min_coverage: float, move: str = ""
) -> str | None:
    """The user-facing warning when the worst frame of the anchor is too little real, else None.

    The check is on the minimum per-frame coverage, not the mean: a move whose last frames are
    half unseen averages out to a comfortable mean but is still hallucinated there. The message
    names the worst frame (0-based, as in ``report["coverage"]``) and keeps the mean.

    Example: ``"this orbit reveals 47% unseen pixels in frame 13 (frames count from 0; 25% on
    average over 14 frames); the result will be mostly hallucinated there; try a smaller angle or
    distance (frame 13 coverage 53.0% < anchor.min_coverage 60%, mean coverage 75.0%)"``.

    Args:
        coverage: valid fraction per frame ``(T,)`` (a single float is one frame).
        min_coverage: ``AnchorConfig.min_coverage``.
        move: the move's name for the message (``"orbit"``).
    """
    values = [float(c) for c in torch.as_tensor(coverage, dtype=torch.float64).reshape(-1)]
    if not values:
        return None
    worst = min(range(len(values)), key=values.__getitem__)
    low, mean = values[worst], sum(values) / len(values)
    if low >= min_coverage:
        return None
    how = "mostly" if 1.0 - low >= 0.4 else "largely"
    what = f"this {move}" if move else "this camera move"
    return (
        f"{what} reveals {1.0 - low:.0%} unseen pixels in frame {worst} (frames count from 0; "
        f"{1.0 - mean:.0%} on average over {len(values)} frames); the result will be {how} hallucinated "
        f"there; try a smaller angle or distance (frame {worst} coverage {low:.1%} < anchor.min_coverage "
        f"{min_coverage:.0%}, mean coverage {mean:.1%})"
    )


def _cache_key(
    frames: Tensor,
    estimator: DepthEstimator,
    trajectory: Trajectory,
    config: AnchorConfig,
    K: Tensor | None,
    extra: Any,
) -> str:
    settings = dataclasses.asdict(config)
    for k in ("cache_dir", "min_coverage", "progress"):
        settings.pop(k)
    token = getattr(estimator, "cache_token", estimator.name)
    target_k = trajectory.intrinsics if trajectory.intrinsics is not None else trajectory.focal_scale
    return hash_inputs(CACHE_VERSION, frames, token, trajectory.c2w, target_k, settings, K, extra)


def _move_name(trajectory: Trajectory) -> str:
    name = (getattr(trajectory, "name", "") or "").strip()
    return name.split()[0] if name else ""


def build_anchor(
    frames: Tensor,
    fps: float,
    depth_estimator: DepthEstimator,
    trajectory: Trajectory,
    config: AnchorConfig,
    K: Tensor | None = None,
    cache_key_extra: Any = None,
) -> AnchorResult:
    """Estimate depth, scale the trajectory to depth units, render the anchor, report; cached on disk.

    The report holds ``num_frames``, ``height``, ``width``, ``fps``, per-frame ``coverage``,
    ``coverage_mean``, ``coverage_min``, ``coverage_min_frame`` (its index), ``depth_source``,
    ``depth_is_prior``, ``scene_scale``,
    ``mode``, ``empty_frames``, ``timings`` (seconds), ``cache`` (``"hit"``/``"miss"``/``"off"``),
    ``cache_key``, ``preflight_warning`` and, with ``fuse_neighbors``, ``fusion`` (coverage without
    fusion and the gain). When the coverage of any frame is below ``config.min_coverage`` a
    preflight warning naming the worst frame is issued (``warnings.warn`` and the log) before any
    diffusion runs; it is recomputed on cache hits, so changing ``min_coverage`` needs no re-render.

    Args:
        frames: source video ``(T, 3, H, W)`` in [0, 1].
        fps: its frame rate.
        depth_estimator: where depth comes from.
        trajectory: new camera per frame, relative to the source camera, in scene units.
        config: rendering settings.
        K: source intrinsics ``(3, 3)``; default from ``config.fov_deg``.
        cache_key_extra: anything else that should invalidate the cache (e.g. the video path).

    Returns:
        :class:`AnchorResult`.
    """
    K, source_K = _check_inputs(frames, trajectory, config, K)
    key = _cache_key(frames, depth_estimator, trajectory, config, K, cache_key_extra)
    entry_path = Path(config.cache_dir) / f"{key}.pt" if config.cache_dir else None
    result = _cached(entry_path, key, frames, fps, trajectory, config)
    if result is None:
        cache = "miss" if entry_path is not None else "off"
        fields = {"cache": cache, "cache_key": key}
        result = _compute(frames, fps, depth_estimator, trajectory, config, K, source_K, fields)
        if entry_path is not None:
            save_entry(entry_path, result)
    _preflight(result.report, config)  # here, so that the warning points at build_anchor's caller
    return result


def _check_inputs(
    frames: Tensor, trajectory: Trajectory, config: AnchorConfig, K: Tensor | None
) -> tuple[Tensor | None, Tensor]:
    """Check the clip, the trajectory's length and ``K``: ``(K as float or None, source intrinsics)``."""
    from recapture.cameras import intrinsics_from_fov

    check_frames(frames)
    t_len, _, h, w = frames.shape
    if trajectory.num_frames != t_len:
        raise RecaptureError(
            f"trajectory length mismatch: the trajectory has {trajectory.num_frames} poses but the video "
            f"has {t_len} frames; build the trajectory with num_frames={t_len} (or Trajectory.resample)"
        )
    if K is not None:
        K = torch.as_tensor(K).float()
        if K.shape != (3, 3):
            raise RecaptureError(f"K must be the (3, 3) source intrinsics, got {tuple(K.shape)}")
    source_K = K if K is not None else intrinsics_from_fov(config.fov_deg, h, w)
    return K, source_K


def _cached(
    entry_path: Path | None,
    key: str,
    frames: Tensor,
    fps: float,
    trajectory: Trajectory,
    config: AnchorConfig,
) -> AnchorResult | None:
    """The cache entry's result (with this run's timings and preflight warning), or None on a miss."""
    if entry_path is None:
        return None
    t_load = time.perf_counter()
    entry = load_entry(entry_path)
    log.info("anchor cache %s %s", "hit" if entry is not None else "miss", key)
    if entry is None:
        return None
    # timings are this run's (loading the entry); the run that computed it is kept apart
    report = dict(entry["report"], cache="hit", timings={"load_s": time.perf_counter() - t_load},
                  computed_timings=entry["report"].get("timings", {}))
    report["coverage_min_frame"] = _worst_frame(report["coverage"])
    move = _move_name(trajectory)
    report["preflight_warning"] = preflight_message(report["coverage"], config.min_coverage, move)
    return AnchorResult(
        source=frames,
        anchor=AnchorVideo(
            entry["anchor_frames"], entry["anchor_mask"], entry["anchor_depth"], entry["info"]
        ),
        depth=entry["depth"],
        K=entry["K"],
        c2w=entry["c2w"],
        trajectory=trajectory,
        fps=float(fps),
        depth_source=report["depth_source"],
        scene_scale=float(entry["scene_scale"]),
        report=report,
        K_source=entry["K_source"],
    )


def _compute(
    frames: Tensor,
    fps: float,
    depth_estimator: DepthEstimator,
    trajectory: Trajectory,
    config: AnchorConfig,
    K: Tensor | None,
    source_K: Tensor,
    cache_fields: dict[str, str],
) -> AnchorResult:
    """Depth, scene scale, scaled trajectory, render (and the fusion gain) and report.

    ``K`` is the given source intrinsics (None: ``source_K`` is from ``config.fov_deg``);
    ``cache_fields`` are the report's ``cache`` and ``cache_key`` entries.
    """
    t0 = time.perf_counter()
    depth = depth_estimator(frames)
    check_depth(depth, frames)
    t1 = time.perf_counter()
    scale = scene_scale(depth)
    scaled = trajectory.scaled(scale)
    target_K = trajectory.intrinsics_for(source_K)
    if depth_estimator.is_prior:
        log.warning(
            "anchor: depth is the weight-free PRIOR %s (report: depth_is_prior=true)", depth_estimator.name
        )
    with torch.no_grad():
        anchor = render_anchor(frames, depth, source_K, scaled.c2w, K_target=target_K,
                               splat=config.splat_settings(), mask=config.mask_settings(),
                               fusion=config.fusion_settings(), progress=config.progress)
        t2 = time.perf_counter()
        fusion = _fusion_report(anchor, frames, depth, source_K, scaled.c2w, target_K, config)
    report = _report(anchor, frames, fps, depth_estimator, trajectory, config, K, scale)
    timings = {"depth_s": t1 - t0, "render_s": t2 - t1, "total_s": time.perf_counter() - t0}
    report.update(timings=timings, **cache_fields)
    if fusion is not None:
        report["fusion"] = fusion
    move = _move_name(trajectory)
    report["preflight_warning"] = preflight_message(anchor.coverage, config.min_coverage, move)
    return AnchorResult(
        source=frames,
        anchor=anchor,
        depth=depth,
        K=target_K,
        c2w=scaled.c2w,
        trajectory=trajectory,
        fps=float(fps),
        depth_source=depth_estimator.name,
        scene_scale=scale,
        report=report,
        K_source=source_K,
    )


def _fusion_report(
    anchor: AnchorVideo,
    frames: Tensor,
    depth: Tensor,
    source_K: Tensor,
    c2w: Tensor,
    target_K: Tensor,
    config: AnchorConfig,
) -> dict[str, Any] | None:
    """With ``fuse_neighbors``: the mean coverage without fusion and the gain, else None.

    This renders the clip a second time, without fusion: the fused render cannot tell which pixels
    only neighbours' points reached (the z-buffer keeps the winner, and the mask is eroded and
    dilated after the union), so the unfused coverage is not derivable from it.
    """
    if not config.fuse_neighbors:
        return None
    plain = render_anchor(frames, depth, source_K, c2w, K_target=target_K,
                          splat=config.splat_settings(), mask=config.mask_settings())
    base, fused = float(plain.coverage.mean()), float(anchor.coverage.mean())
    log.info("anchor: neighbour fusion raised mean coverage %.1f%% -> %.1f%%", 100 * base, 100 * fused)
    return {
        "fuse_neighbors": config.fuse_neighbors,
        "coverage_mean_unfused": base,
        "coverage_gain": fused - base,
    }


def _report(
    anchor: AnchorVideo,
    frames: Tensor,
    fps: float,
    depth_estimator: DepthEstimator,
    trajectory: Trajectory,
    config: AnchorConfig,
    K: Tensor | None,
    scale: float,
) -> dict[str, Any]:
    """The report of a fresh render, up to ``empty_frames`` (timings, cache and preflight follow)."""
    t_len, _, h, w = frames.shape
    coverage = anchor.coverage
    return {
        "num_frames": t_len,
        "height": h,
        "width": w,
        "fps": float(fps),
        "coverage": [round(float(c), 6) for c in coverage],
        "coverage_mean": float(coverage.mean()),
        "coverage_min": float(coverage.min()),
        "coverage_min_frame": int(coverage.argmin()),
        "depth_source": depth_estimator.name,
        "depth_is_prior": bool(depth_estimator.is_prior),
        "scene_scale": scale,
        "mode": config.mode,
        "footprint": config.footprint,
        "fov_deg": None if K is not None else config.fov_deg,
        "trajectory": getattr(trajectory, "name", ""),
        "empty_frames": anchor.info.get("empty_frames", []),
    }


def _worst_frame(coverage: Sequence[float]) -> int:
    return min(range(len(coverage)), key=coverage.__getitem__) if len(coverage) else 0


def _preflight(report: dict[str, Any], config: AnchorConfig) -> None:
    msg = report.get("preflight_warning")
    if msg:
        warnings.warn(msg, UserWarning, stacklevel=3)
        log.warning("preflight: %s", msg)
