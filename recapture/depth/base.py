"""The depth interface: the ``DepthEstimator`` protocol, its YAML config, validation and scene scale.

Every backend returns **planar** depth ``(T, 1, H, W)`` (camera-frame ``z``, not the distance along
the ray), strictly positive and finite, in arbitrary but consistent units. The first frame's median
depth defines one *scene unit* (:func:`scene_scale`), which trajectories are expressed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from recapture.utils import RecaptureError

log = logging.getLogger(__name__)

__all__ = [
    "DepthConfig",
    "DepthEstimator",
    "DisparityMapping",
    "check_depth",
    "check_frames",
    "make_depth_estimator",
    "scene_scale",
]


@runtime_checkable
class DepthEstimator(Protocol):
    """Anything that maps a video to planar depth.

    Attributes:
        name: where the depth comes from, e.g. ``"transformers:depth-anything/Depth-Anything-V2-Small-hf"``,
            ``"file:depth.npz"`` or ``"prior:ground-plane"``; written to logs and reports.
        is_prior: True for the weight-free fallback (no real depth): reports label it as such.

    Optionally, ``cache_token`` (any JSON-able or tensor value) changes whenever the output would
    change (settings, file content); the anchor cache key uses it, falling back to ``name``.
    """

    name: str
    is_prior: bool

    def __call__(self, frames: Tensor) -> Tensor:
        """Estimate depth.

        Args:
            frames: video :math:`(T, 3, H, W)` in [0, 1].

        Returns:
            planar depth :math:`(T, 1, H, W)`, finite and > 0.
        """
        ...


@dataclass
class DisparityMapping:
    """How disparity-like values (relative depth models, disparity files) become planar depth.

    ``mode="near_far"`` (default, for *relative* models such as Depth Anything or DPT, whose output
    is inverse depth up to an unknown scale and shift): disparity is normalised over the whole
    video between its ``low_percentile`` and ``high_percentile`` (robust to outliers, and one
    normalisation for all frames so the mapping itself does not flicker), clipped to [0, 1], and
    then mapped linearly in *inverse depth* between the far plane (normalised 0) and the near plane
    (normalised 1)::

        n = clip((disp - p_low) / (p_high - p_low), 0, 1)
        depth = 1 / (1 / far + n * (1 / near - 1 / far))

    Interpolating inverse depth (not depth) keeps the model's affine-invariant disparity affine,
    i.e. it is the exact answer when the model is right up to scale and shift and the scene spans
    ``[near, far]``. Only the ratio ``far / near`` matters downstream (scene scale normalises the
    rest): it sets how much parallax a camera move produces. 10 suits typical handheld videos
    (subject at ~1-2 m, background at ~10-20 m); raise it for landscapes, lower it for close-ups.

    ``mode="inverse"``: ``depth = 1 / disparity`` (metric inverse depth, e.g. from stereo).

    Attributes:
        mode: ``"near_far"`` or ``"inverse"``.
        near: depth of the nearest content (normalised disparity 1).
        far: depth of the farthest content (normalised disparity 0, sky).
        low_percentile: percentile of disparity mapped to the far plane.
        high_percentile: percentile of disparity mapped to the near plane.
    """

    mode: Literal["near_far", "inverse"] = "near_far"
    near: float = 1.0
    far: float = 10.0
    low_percentile: float = 1.0
    high_percentile: float = 99.0

    def __post_init__(self) -> None:
        if not 0 < self.near < self.far:
            raise RecaptureError(
                f"disparity_mapping needs 0 < near < far, got near={self.near}, far={self.far}; "
                "e.g. near: 1.0, far: 10.0"
            )
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise RecaptureError(
                f"disparity_mapping percentiles must satisfy 0 <= low < high <= 100, got "
                f"low={self.low_percentile}, high={self.high_percentile}"
            )


@dataclass
class DepthConfig:
    """Where depth comes from (the ``depth:`` section of a config).

    Attributes:
        backend: ``"transformers"`` (any ``AutoModelForDepthEstimation``), ``"file"`` (precomputed
            ``.npy``/``.npz``) or ``"prior"`` (weight-free ground-plane ramp; no real depth).
        model: transformers backend: hub id or local directory.
        metric: transformers backend: whether the model predicts metric depth (ZoeDepth, Depth Pro,
            Depth Anything metric) rather than relative disparity; ``None`` detects it from the
            model config.
        input_size: transformers backend: the shorter image side fed to the model (rounded to a
            multiple of the patch size).
        path: file backend: the ``.npy``/``.npz`` file with a ``(T, H, W)`` array.
        kind: file backend: what the file holds: planar ``depth``, Euclidean ``distance`` to the
            camera centre, or ``disparity``.
        units: file backend: multiply the stored values by this (0.001 for millimetres).
        disparity_mapping: how disparity becomes depth (relative models, disparity files).
        align: per-frame scale/shift alignment to the first frame (reduces flicker); ``None`` turns
            it on for relative models and disparity files.
        prior_horizon: prior backend: the horizon row as a fraction of the height from the top.
        prior_backdrop: prior backend: depth of the vertical backdrop that caps the ground plane,
            in units of the bottom row's depth (3: the floor meets a backdrop three times farther
            away than the bottom of the frame, at 60% of the height for the default horizon).
        batch_size: frames per model call.
        device: where the depth model runs; ``None`` is the run's device (the trainer's accelerator
            and devices), the CPU outside a run.
        dtype: ``"auto"`` is float16 on CUDA and float32 on CPU.
        progress: show a progress bar over frames.
    """

    backend: Literal["transformers", "file", "prior"] = "prior"
    model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    metric: bool | None = None
    input_size: int = 518
    path: str | None = None
    kind: Literal["depth", "distance", "disparity"] = "depth"
    units: float = 1.0
    disparity_mapping: DisparityMapping = field(default_factory=DisparityMapping)
    align: bool | None = None
    prior_horizon: float = 0.4
    prior_backdrop: float = 3.0
    batch_size: int = 4
    device: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    progress: bool = True


def make_depth_estimator(
    config: DepthConfig, fov_deg: float | None = None, device: torch.device | str | None = None
) -> DepthEstimator:
    """Build the estimator a :class:`DepthConfig` describes.

    Args:
        config: the depth settings.
        fov_deg: horizontal field of view of the source video in degrees; the file backend needs it
            to turn Euclidean ``distance`` into planar depth.
        device: the run's device, used by model backends when ``config.device`` is not set (None:
            the CPU).

    Returns:
        a :class:`DepthEstimator`.
    """
    if isinstance(config.disparity_mapping, dict):  # plain dicts from YAML / notebooks
        config.disparity_mapping = DisparityMapping(**config.disparity_mapping)
    if config.backend == "transformers":
        from recapture.depth.transformers_backend import TransformersDepth

        return TransformersDepth(config, device=device)
    if config.backend == "file":
        from recapture.depth.file_backend import FileDepth

        return FileDepth(config, fov_deg=fov_deg)
    if config.backend == "prior":
        from recapture.depth.prior import GroundPlanePrior

        return GroundPlanePrior(horizon=config.prior_horizon, near=1.0, far=config.prior_backdrop)
    raise RecaptureError(f"unknown depth backend {config.backend!r}; use 'transformers', 'file' or 'prior'")


def check_frames(frames: Tensor, name: str = "frames") -> None:
    """Raise a :class:`RecaptureError` unless ``frames`` is a ``(T, 3, H, W)`` video."""
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise RecaptureError(f"{name} must be a (T, 3, H, W) tensor in [0, 1], got {shape}")
    if frames.shape[0] == 0:
        raise RecaptureError(f"{name} has no frames (shape {tuple(frames.shape)})")


def check_depth(depth: Tensor, frames: Tensor | None = None, valid: Tensor | None = None) -> None:
    """Raise a :class:`RecaptureError` naming the frames if depth is malformed.

    Args:
        depth: planar depth :math:`(T, 1, H, W)`.
        frames: optional video :math:`(T, 3, H, W)` the depth must match.
        valid: optional mask :math:`(T, 1, H, W)`; only pixels where it is nonzero are checked.
    """
    if not isinstance(depth, Tensor) or depth.ndim != 4 or depth.shape[1] != 1:
        shape = tuple(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__
        raise RecaptureError(f"depth must be a (T, 1, H, W) tensor, got {shape}")
    if frames is not None and (depth.shape[0] != frames.shape[0] or depth.shape[-2:] != frames.shape[-2:]):
        raise RecaptureError(
            f"depth {tuple(depth.shape)} does not match frames {tuple(frames.shape)}: need "
            f"({frames.shape[0]}, 1, {frames.shape[-2]}, {frames.shape[-1]}); estimate depth for these "
            "exact frames or resize it"
        )
    d = depth.detach()
    ok = torch.isfinite(d) & (d > 0)
    if valid is not None:
        ok = ok | (valid.detach() == 0)
    bad = (~ok).flatten(1).any(1)
    if bool(bad.any()):
        frames_bad = bad.nonzero().flatten().tolist()
        what = []
        if bool(torch.isnan(d).any()):
            what.append("NaN")
        if bool(torch.isinf(d).any()):
            what.append("inf")
        if bool((d <= 0).any()):
            what.append("non-positive")
        shown = ", ".join(map(str, frames_bad[:10])) + (" ..." if len(frames_bad) > 10 else "")
        raise RecaptureError(
            f"depth has {'/'.join(what)} values in {len(frames_bad)} of {d.shape[0]} frames "
            f"(frame {shown}); depth must be finite and > 0: fix or regenerate the depth (for sensor "
            "depth with holes, pass a source mask that excludes them)"
        )


def scene_scale(depth: Tensor) -> float:
    """The median depth of the first frame: the length of one scene unit.

    Args:
        depth: planar depth :math:`(T, 1, H, W)` (or :math:`(1, H, W)` / :math:`(H, W)` for one frame).

    Returns:
        the median of frame 0 as a Python float.
    """
    first = depth[0] if depth.ndim >= 3 else depth
    first = first.detach()
    first = first[torch.isfinite(first) & (first > 0)]
    if first.numel() == 0:
        raise RecaptureError("scene_scale: the first frame has no valid (finite, > 0) depth")
    return float(first.float().median())
