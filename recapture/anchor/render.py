"""Anchor videos (paper section 3.2): lift each frame to a point cloud, move the camera, re-render."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from recapture.anchor.mask import refine_mask
from recapture.anchor.points import (
    depth_to_points,
    depth_to_points_frames,
    invert_rigid,
    neighbor_points,
    pixel_rays,
    transform,
    transform_frames,
)
from recapture.anchor.settings import FusionSettings, MaskSettings, SplatSettings
from recapture.anchor.splat import splat_hard, splat_soft
from recapture.depth.base import check_depth, check_frames
from recapture.utils import RecaptureError

log = logging.getLogger(__name__)

__all__ = ["AnchorVideo", "FusionSettings", "MaskSettings", "SplatSettings", "render_anchor"]

# Points nearer than this fraction of the frame's largest source depth count as "at the camera".
NEAR_FRACTION = 1e-5


@dataclass
class AnchorVideo:
    """A re-rendered video and where it is valid.

    Attributes:
        frames: ``(T, 3, H, W)`` in [0, 1], 0 where invalid.
        mask: ``(T, 1, H, W)`` float in {0, 1}: 1 where a visible source surface landed.
        depth: ``(T, 1, H, W)`` rendered planar depth in the target cameras, 0 where invalid.
        info: diagnostics (``empty_frames``, ``fused_points`` per frame, ...).
    """

    frames: Tensor
    mask: Tensor
    depth: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage(self) -> Tensor:
        """Valid fraction per frame, ``(T,)``."""
        return self.mask.detach().flatten(1).float().mean(1)

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def _check_inputs(
    frames: Tensor, depth: Tensor, K: Tensor, c2w: Tensor, K_target: Tensor | None, source_mask: Tensor | None
) -> None:
    check_frames(frames)
    t = frames.shape[0]
    check_depth(depth, frames, valid=source_mask)
    for name, k in (("K", K), ("K_target", K_target)):
        if k is None:
            continue
        if (
            not isinstance(k, Tensor)
            or k.shape[-2:] != (3, 3)
            or k.ndim not in (2, 3)
            or (k.ndim == 3 and k.shape[0] != t)
        ):
            raise RecaptureError(f"{name} must be (3, 3) or ({t}, 3, 3) for {t} frames, got {_shape(k)}")
    if not isinstance(c2w, Tensor) or c2w.ndim != 3 or c2w.shape[-2:] != (4, 4):
        raise RecaptureError(f"c2w must be (T, 4, 4) camera-to-world poses, got {_shape(c2w)}")
    if c2w.shape[0] != t:
        raise RecaptureError(
            f"trajectory length mismatch: c2w has {c2w.shape[0]} poses but the video has {t} frames; "
            f"generate or resample the trajectory with num_frames={t}"
        )
    if not bool(torch.isfinite(c2w.detach()).all()):
        raise RecaptureError("c2w contains NaN/inf; check the trajectory")
    rot = c2w.detach()[:, :3, :3].double()
    err = (rot @ rot.transpose(1, 2) - torch.eye(3, dtype=rot.dtype, device=rot.device)).abs().amax((1, 2))
    bad = (err > 1e-3).nonzero().flatten().tolist()
    if bad:
        raise RecaptureError(
            f"c2w rotations of frames {bad[:10]} are not orthonormal (max error {float(err.max()):.2g}); "
            "poses must be rigid (scale the translation, not the rotation)"
        )
    if source_mask is not None and (source_mask.shape[0] != t or source_mask.shape[1:] != depth.shape[1:]):
        raise RecaptureError(
            f"source_mask must be {tuple(depth.shape)} like depth, got {_shape(source_mask)}"
        )


def _per_frame(k: Tensor, t: int) -> Tensor:
    return k.expand(t, 3, 3) if k.ndim == 2 else k


def _frame_points(
    frames: Tensor, depth: Tensor, Ks: Tensor, t: int, rays: Tensor | None, source_mask: Tensor | None
) -> tuple[Tensor, Tensor, float]:
    """Frame ``t``'s source-camera points ``(N, 3)``, colours ``(N, C)`` and near distance."""
    pts = depth_to_points(depth[t], Ks[t], rays=rays)
    col = frames[t].flatten(1).T
    d_ok = depth[t]
    if source_mask is not None:
        keep = source_mask[t].reshape(-1) > 0
        pts, col = pts[keep], col[keep]
        d_ok = depth[t][source_mask[t] > 0]
    near = NEAR_FRACTION * float(d_ok.detach().amax()) if d_ok.numel() else 1e-6
    return pts, col, near


def _splat(
    points: Tensor, colors: Tensor, K: Tensor, nears: list[float], splat: SplatSettings, size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Splat target-camera clouds ``(B, N, 3)`` with colours ``(B, N, C)``: (image, depth, mask)."""
    if splat.mode == "hard":
        return splat_hard(points, colors, K, size, footprint=splat.footprint, near=nears)
    return splat_soft(points, colors, K, size, beta=splat.soft_beta, near=nears)


def _report_empty(mask: Tensor, in_front: Callable[[int], int]) -> list[int]:
    """Warn about (or, if all are, raise on) empty frames; ``in_front(t)``: points in front in frame t."""
    cover = mask.flatten(1).sum(1)
    empty = (cover == 0).nonzero().flatten().tolist()
    if not empty:
        return empty
    behind = [t for t in empty if in_front(t) == 0]
    why = (
        f"every point is behind the camera in frames {behind[:10]}"
        if behind
        else "the camera looks away from every point"
    )
    if len(empty) == mask.shape[0]:
        raise RecaptureError(
            f"the trajectory leaves no source pixel in view in any of the {mask.shape[0]} frames ({why}); "
            "check the trajectory's direction and scale (translations are in scene units: 1 = median "
            "depth of frame 0) and that poses are camera-to-world in OpenCV axes"
        )
    msg = (
        f"anchor frames {empty[:10]}{' ...' if len(empty) > 10 else ''} are empty ({why}); "
        "those frames will be entirely generated: use a smaller camera move"
    )
    warnings.warn(msg, stacklevel=3)
    log.warning(msg)
    return empty


def _check_settings(splat: SplatSettings, mask: MaskSettings, fusion: FusionSettings) -> None:
    if splat.mode not in ("hard", "soft"):
        raise RecaptureError(f"mode must be 'hard' or 'soft', got {splat.mode!r}")
    if splat.footprint < 1 or splat.footprint % 2 == 0:
        raise RecaptureError(f"footprint must be an odd number >= 1, got {splat.footprint}")
    if min(mask.erode, mask.dilate, fusion.neighbors) < 0:
        raise RecaptureError(
            "mask_erode, mask_dilate and fuse_neighbors must be >= 0, got "
            f"{mask.erode}, {mask.dilate}, {fusion.neighbors}"
        )


class _Inputs(NamedTuple):
    """The renderer's inputs in one dtype on the frames' device, intrinsics per frame."""

    frames: Tensor
    depth: Tensor
    source_mask: Tensor | None
    source_c2w: Tensor | None
    Ks: Tensor
    Kt: Tensor
    w2c: Tensor
    shared_rays: Tensor | None  # one pixel-ray grid when every frame has the same K


def _prepare(
    frames: Tensor,
    depth: Tensor,
    K: Tensor,
    c2w: Tensor,
    K_target: Tensor | None,
    source_c2w: Tensor | None,
    source_mask: Tensor | None,
) -> _Inputs:
    t_len, _, h, w = frames.shape
    dtype = torch.promote_types(frames.dtype, depth.dtype) if depth.is_floating_point() else frames.dtype
    frames = frames.to(dtype)
    depth = depth.to(frames.device, dtype)
    if source_mask is not None:
        source_mask = source_mask.to(frames.device)
    if source_c2w is not None:
        source_c2w = source_c2w.to(frames.device, dtype)
    Ks = _per_frame(K.to(frames.device, dtype), t_len)
    Kt = _per_frame(K_target.to(frames.device, dtype), t_len) if K_target is not None else Ks
    w2c = invert_rigid(c2w.to(frames.device, dtype))
    # one pixel-ray grid per distinct K (usually one for the whole video); not for gradients w.r.t. K
    shared_rays = pixel_rays(Ks[0], (h, w)) if bool((Ks == Ks[:1]).all()) and not Ks.requires_grad else None
    return _Inputs(frames, depth, source_mask, source_c2w, Ks, Kt, w2c, shared_rays)


class _Splatted(NamedTuple):
    image: Tensor
    depth: Tensor
    mask: Tensor
    in_front: Callable[[int], int]  # points in front of the target camera in frame t
    fused: list[int]  # neighbour points added per frame (empty without fusion)


def _render_clip(x: _Inputs, splat: SplatSettings, progress: bool) -> _Splatted:
    """Every frame has the same H W points: the whole clip goes through one batch of tensor ops."""
    t_len, _, h, w = x.frames.shape
    nears = [NEAR_FRACTION * d for d in x.depth.detach().flatten(1).amax(1).tolist()]
    rays = x.shared_rays if x.shared_rays is not None else torch.cat([pixel_rays(k, (h, w)) for k in x.Ks])
    pts = transform_frames(x.w2c, depth_to_points_frames(x.depth, rays))
    with tqdm(total=t_len, desc=f"anchor ({splat.mode})", unit="frame", disable=not progress) as bar:
        image, rdepth, mask = _splat(pts, x.frames.flatten(2).transpose(1, 2), x.Kt, nears, splat, (h, w))
        bar.update(t_len)

    def in_front(t: int) -> int:
        return int((pts[t, :, 2].detach() > nears[t]).sum())

    return _Splatted(image, rdepth, mask, in_front, [])


def _render_frames(x: _Inputs, splat: SplatSettings, neighbors: int, progress: bool) -> _Splatted:
    """One frame at a time (source masks drop points, fusion adds neighbours' points)."""
    t_len, _, h, w = x.frames.shape
    outs, counts, fused = [], [], []
    for t in tqdm(range(t_len), desc=f"anchor ({splat.mode})", unit="frame", disable=not progress):
        pts_t, col, near = _frame_points(x.frames, x.depth, x.Ks, t, x.shared_rays, x.source_mask)
        if neighbors:
            extra_p, extra_c = neighbor_points(
                x.frames, x.depth, x.Ks, t, neighbors, x.source_c2w, x.source_mask, near=near
            )
            fused.append(int(extra_p.shape[0]))
            pts_t, col = torch.cat([pts_t, extra_p.to(pts_t.dtype)]), torch.cat([col, extra_c])
        pts_t = transform(x.w2c[t], pts_t)
        counts.append(int((pts_t[:, 2].detach() > near).sum()))
        outs.append(_splat(pts_t[None], col[None], x.Kt[t], [near], splat, (h, w)))
    image, rdepth, mask = (torch.cat(o) for o in zip(*outs, strict=True))
    return _Splatted(image, rdepth, mask, counts.__getitem__, fused)


def render_anchor(
    frames: Tensor,
    depth: Tensor,
    K: Tensor,
    c2w: Tensor,
    *,
    K_target: Tensor | None = None,
    source_c2w: Tensor | None = None,
    source_mask: Tensor | None = None,
    splat: SplatSettings = SplatSettings(),
    mask: MaskSettings = MaskSettings(),
    fusion: FusionSettings = FusionSettings(),
    progress: bool = False,
) -> AnchorVideo:
    """Re-render every frame from its new camera: the anchor video and its validity mask.

    Frame ``t`` is lifted to a point cloud with its depth and ``K``, moved into the target camera
    ``c2w[t]`` (given relative to frame ``t``'s source camera, so ``c2w = I`` reproduces the input)
    and splatted: ``splat.mode="hard"`` is a deterministic z-buffer (nearest surface wins);
    ``"soft"`` a differentiable softmax splat (gradients reach frames, depth and ``c2w``).
    Points behind the target camera are dropped; pixels no point reaches (disocclusions, regions
    outside the source view) are 0 in ``frames`` and in ``mask``.

    Args:
        frames: source video ``(T, 3, H, W)`` in [0, 1].
        depth: planar depth ``(T, 1, H, W)``, finite and > 0 (where ``source_mask`` is 1).
        K: source intrinsics ``(3, 3)`` or ``(T, 3, 3)`` in pixels.
        c2w: target camera of frame t relative to the source camera of frame t,
            ``(T, 4, 4)``, OpenCV axes, translation in depth units.
        K_target: target intrinsics ``(3, 3)`` or ``(T, 3, 3)`` (zoom); default ``K``.
        source_c2w: source camera poses ``(T, 4, 4)`` for neighbour fusion; ``None`` assumes
            a static source camera.
        source_mask: optional ``(T, 1, H, W)``; pixels where it is 0 (e.g. sensor depth holes)
            produce no point and their depth is not checked.
        splat: splat mode, footprint and soft sharpness (:class:`~recapture.anchor.SplatSettings`).
        mask: erosion and dilation of the valid region (:class:`~recapture.anchor.MaskSettings`).
        fusion: neighbour fusion, off by default (:class:`~recapture.anchor.FusionSettings`).
        progress: show a progress bar over frames.

    Returns:
        :class:`AnchorVideo` with ``frames`` ``(T, 3, H, W)``, ``mask`` and ``depth``
        ``(T, 1, H, W)``.

    Raises:
        RecaptureError: on bad settings, shape mismatches, bad depth, non-rigid poses, or when no
            frame sees any point (a warning names frames that are empty while others are not).
    """
    _check_settings(splat, mask, fusion)
    _check_inputs(frames, depth, K, c2w, K_target, source_mask)
    if source_c2w is not None and (source_c2w.ndim != 3 or source_c2w.shape != c2w.shape):
        raise RecaptureError(f"source_c2w must be {tuple(c2w.shape)} like c2w, got {_shape(source_c2w)}")
    if not frames.is_floating_point():
        raise RecaptureError(f"frames must be float in [0, 1], got {frames.dtype}; divide uint8 video by 255")
    x = _prepare(frames, depth, K, c2w, K_target, source_c2w, source_mask)
    if source_mask is None and not fusion.neighbors:
        out = _render_clip(x, splat, progress)
    else:
        out = _render_frames(x, splat, fusion.neighbors, progress)
    image, rdepth, valid = out.image, out.depth, out.mask.to(out.image.dtype)
    empty = _report_empty(valid, out.in_front)
    if mask.erode or mask.dilate:  # (without them the splat has already zeroed frames and depth)
        image, valid, rdepth = refine_mask(image, valid, rdepth, erode=mask.erode, dilate=mask.dilate)
    info: dict[str, Any] = {"empty_frames": empty}
    if fusion.neighbors:
        info["fused_points"] = out.fused
    return AnchorVideo(frames=image, mask=valid, depth=rdepth, info=info)
