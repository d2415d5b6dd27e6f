"""Anchor videos (paper section 3.2): lift each frame to a point cloud, move the camera, re-render."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

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
from recapture.anchor.splat import splat_hard, splat_soft
from recapture.depth.base import check_depth, check_frames
from recapture.utils import RecaptureError

log = logging.getLogger(__name__)

__all__ = ["AnchorVideo", "render_anchor"]

# Points nearer than this fraction of the frame's largest source depth count as "at the camera".
NEAR_FRACTION = 1e-5


@dataclass
class AnchorVideo:
    """A re-rendered video and where it is valid.

    Attributes:
        frames: :math:`(T, 3, H, W)` in [0, 1], 0 where invalid.
        mask: :math:`(T, 1, H, W)` float in {0, 1}: 1 where a visible source surface landed.
        depth: :math:`(T, 1, H, W)` rendered planar depth in the target cameras, 0 where invalid.
        info: diagnostics (``empty_frames``, ``fused_points`` per frame, ...).
    """

    frames: Tensor
    mask: Tensor
    depth: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage(self) -> Tensor:
        """Valid fraction per frame, :math:`(T,)`."""
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
    """Frame ``t``'s source-camera points :math:`(N, 3)`, colours :math:`(N, C)` and near distance."""
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
    points: Tensor,
    colors: Tensor,
    K: Tensor,
    nears: list[float],
    mode: str,
    size: tuple[int, int],
    footprint: int,
    beta: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Splat target-camera clouds :math:`(B, N, 3)` with colours :math:`(B, N, C)`: (image, depth, mask)."""
    if mode == "hard":
        return splat_hard(points, colors, K, size, footprint=footprint, near=nears)
    return splat_soft(points, colors, K, size, beta=beta, near=nears)


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


def render_anchor(
    frames: Tensor,
    depth: Tensor,
    K: Tensor,
    c2w: Tensor,
    mode: Literal["hard", "soft"] = "hard",
    footprint: int = 1,
    mask_erode: int = 0,
    mask_dilate: int = 0,
    fuse_neighbors: int = 0,
    source_c2w: Tensor | None = None,
    source_mask: Tensor | None = None,
    K_target: Tensor | None = None,
    soft_beta: float = 50.0,
    progress: bool = False,
) -> AnchorVideo:
    """Re-render every frame from its new camera: the anchor video and its validity mask.

    Frame ``t`` is lifted to a point cloud with its depth and ``K``, moved into the target camera
    ``c2w[t]`` (given relative to frame ``t``'s source camera, so ``c2w = I`` reproduces the input)
    and splatted: ``mode="hard"`` is a deterministic z-buffer (nearest surface wins);
    ``mode="soft"`` a differentiable softmax splat (gradients reach frames, depth and ``c2w``).
    Points behind the target camera are dropped; pixels no point reaches (disocclusions, regions
    outside the source view) are 0 in ``frames`` and in ``mask``.

    Args:
        frames: source video :math:`(T, 3, H, W)` in [0, 1].
        depth: planar depth :math:`(T, 1, H, W)`, finite and > 0 (where ``source_mask`` is 1).
        K: source intrinsics :math:`(3, 3)` or :math:`(T, 3, 3)` in pixels.
        c2w: target camera of frame t relative to the source camera of frame t,
            :math:`(T, 4, 4)`, OpenCV axes, translation in depth units.
        mode: ``"hard"`` or ``"soft"``.
        footprint: hard mode: odd splat size in pixels; 1 is exact, 3 closes slant pinholes.
        mask_erode: shrink the valid region by this many pixels (drop unreliable hole rims).
        mask_dilate: grow the valid region by this many pixels, filling with neighbouring colours
            (applied before erosion; equal values give a closing that removes pinholes).
        fuse_neighbors: beyond the paper, off by default: also splat points of the ``n`` frames on
            each side that frame t's depth says are hidden static background (see
            :func:`~recapture.anchor.points.neighbor_points`), filling disocclusions with real pixels.
        source_c2w: source camera poses :math:`(T, 4, 4)` for ``fuse_neighbors``; ``None`` assumes
            a static source camera.
        source_mask: optional :math:`(T, 1, H, W)`; pixels where it is 0 (e.g. sensor depth holes)
            produce no point and their depth is not checked.
        K_target: target intrinsics :math:`(3, 3)` or :math:`(T, 3, 3)` (zoom); default ``K``.
        soft_beta: soft mode depth sharpness (see :func:`~recapture.anchor.splat.splat_soft`).
        progress: show a progress bar over frames.

    Returns:
        :class:`AnchorVideo` with ``frames`` :math:`(T, 3, H, W)`, ``mask`` and ``depth``
        :math:`(T, 1, H, W)`.

    Raises:
        RecaptureError: on shape mismatches, bad depth, non-rigid poses, or when no frame sees any
            point (a warning names frames that are empty while others are not).
    """
    if mode not in ("hard", "soft"):
        raise RecaptureError(f"mode must be 'hard' or 'soft', got {mode!r}")
    if footprint < 1 or footprint % 2 == 0:
        raise RecaptureError(f"footprint must be an odd number >= 1, got {footprint}")
    if min(mask_erode, mask_dilate, fuse_neighbors) < 0:
        raise RecaptureError(
            "mask_erode, mask_dilate and fuse_neighbors must be >= 0, got "
            f"{mask_erode}, {mask_dilate}, {fuse_neighbors}"
        )
    _check_inputs(frames, depth, K, c2w, K_target, source_mask)
    if source_c2w is not None and (source_c2w.ndim != 3 or source_c2w.shape != c2w.shape):
        raise RecaptureError(f"source_c2w must be {tuple(c2w.shape)} like c2w, got {_shape(source_c2w)}")
    t_len, c, h, w = frames.shape
    if not frames.is_floating_point():
        raise RecaptureError(f"frames must be float in [0, 1], got {frames.dtype}; divide uint8 video by 255")
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

    splat = partial(_splat, mode=mode, size=(h, w), footprint=footprint, beta=soft_beta)
    if source_mask is None and not fuse_neighbors:
        # every frame has the same H W points: the whole clip goes through one batch of tensor ops
        nears = [NEAR_FRACTION * d for d in depth.detach().flatten(1).amax(1).tolist()]
        rays = shared_rays if shared_rays is not None else torch.cat([pixel_rays(k, (h, w)) for k in Ks])
        pts = transform_frames(w2c, depth_to_points_frames(depth, rays))
        with tqdm(total=t_len, desc=f"anchor ({mode})", unit="frame", disable=not progress) as bar:
            image, rdepth, mask = splat(pts, frames.flatten(2).transpose(1, 2), Kt, nears)
            bar.update(t_len)

        def in_front(t: int) -> int:
            return int((pts[t, :, 2].detach() > nears[t]).sum())

    else:
        outs, counts, fused = [], [], []
        for t in tqdm(range(t_len), desc=f"anchor ({mode})", unit="frame", disable=not progress):
            pts_t, col, near = _frame_points(frames, depth, Ks, t, shared_rays, source_mask)
            if fuse_neighbors:
                extra_p, extra_c = neighbor_points(
                    frames, depth, Ks, t, fuse_neighbors, source_c2w, source_mask, near=near
                )
                fused.append(int(extra_p.shape[0]))
                pts_t, col = torch.cat([pts_t, extra_p.to(pts_t.dtype)]), torch.cat([col, extra_c])
            pts_t = transform(w2c[t], pts_t)
            counts.append(int((pts_t[:, 2].detach() > near).sum()))
            outs.append(splat(pts_t[None], col[None], Kt[t], [near]))
        image, rdepth, mask = (torch.cat(o) for o in zip(*outs, strict=True))
        in_front = counts.__getitem__
    mask = mask.to(image.dtype)
    empty = _report_empty(mask, in_front)
    if mask_erode or mask_dilate:  # (without them the splat has already zeroed frames and depth)
        image, mask, rdepth = refine_mask(image, mask, rdepth, erode=mask_erode, dilate=mask_dilate)
    info: dict[str, Any] = {"empty_frames": empty}
    if fuse_neighbors:
        info["fused_points"] = fused
    return AnchorVideo(frames=image, mask=mask, depth=rdepth, info=info)
