"""Reference anchor renderer: the oracle for the bitwise parity tests.

This is ``recapture.anchor.render_anchor`` as it was at commit 75345d5, before it was optimised
(render.py, splat.py, points.py and mask.py of that commit), frozen here as a self-contained,
test-only copy. ``test_anchor_speed_parity`` runs it next to the package's renderer on the same
inputs on the same machine and requires bit-for-bit equal outputs, so the check does not depend
on the CPU's vector width or the torch build the way recorded digests do.

The arithmetic is kept exactly (same ops, same order, same dtypes, same tie-breaking); only input
validation, warnings, logging, the progress bar, ``source_c2w`` and the ``AnchorVideo`` dataclass
are gone. It depends on torch and kornia only, never on ``recapture``, so later changes to the
package cannot change the reference. Do not edit it, except to fix a divergence from 75345d5.

One intended change since 75345d5 (2026-12-07): the hard footprint no longer lets a neighbour's copy
replace a point that landed in its own pixel, except in a pinhole (own point behind clearly
nearer points on both sides within twice the footprint radius). Before, a slanted floor shifted by a row
wherever adjacent rows differed in depth by more than 1%, so even the source camera did not give
the source (17% of the pixels of the 256x384 example clip). :func:`_pinholes` states that rule
here by explicit offsets over a padded grid, independently of the package's implementation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from kornia.geometry.camera import project_points
from kornia.geometry.depth import depth_to_3d_v2, unproject_meshgrid
from kornia.geometry.linalg import transform_points
from torch import Tensor

NEAR_FRACTION = 1e-5  # points nearer than this fraction of the largest source depth are dropped
FOOTPRINT_DEPTH_BIAS = 0.01  # hard footprint copies are pushed back by this relative depth
PINHOLE_DEPTH_GAP = 0.10  # per pixel of distance: how much nearer a side point must be to make a pinhole
MIN_BILINEAR_WEIGHT = 1e-4  # soft: smaller bilinear weights are dropped
DEPTH_TOL = 0.05  # fusion: relative depth margin of the occlusion test


class Reference(NamedTuple):
    """``frames`` :math:`(T, C, H, W)`, ``mask`` and ``depth`` :math:`(T, 1, H, W)`."""

    frames: Tensor
    mask: Tensor
    depth: Tensor


# ------------------------------------------------------------------ points (points.py)
def _depth_to_points(depth: Tensor, K: Tensor, rays: Tensor | None = None) -> Tensor:
    """Depth :math:`(1, H, W)`, K :math:`(3, 3)`, rays :math:`(1, H, W, 3)` -> points :math:`(HW, 3)`."""
    d = depth.reshape(1, *depth.shape[-2:])
    return depth_to_3d_v2(d, K[None].to(d.dtype), xyz_grid=rays).reshape(-1, 3)


def _invert_rigid(pose: Tensor) -> Tensor:
    """Closed-form inverse of rigid transforms :math:`(*, 4, 4)`."""
    rot_t = pose[..., :3, :3].transpose(-1, -2)
    trans = -(rot_t @ pose[..., :3, 3:])
    top = torch.cat([rot_t, trans], -1)
    bottom = torch.zeros_like(pose[..., 3:, :])
    bottom[..., 3] = 1
    return torch.cat([top, bottom], -2)


def _transform(pose: Tensor, points: Tensor) -> Tensor:
    """Pose :math:`(4, 4)` applied to points :math:`(N, 3)`."""
    return transform_points(pose[None].to(points.dtype), points[None])[0]


def _neighbor_points(
    frames: Tensor, depth: Tensor, K: Tensor, t: int, radius: int, valid: Tensor | None, near: float
) -> tuple[Tensor, Tensor]:
    """Static-camera neighbour fusion: points :math:`(M, 3)`, colours :math:`(M, C)` of frames
    ``t - radius .. t + radius`` hidden behind (or outside) frame ``t``'s surface.

    frames :math:`(T, C, H, W)`, depth :math:`(T, 1, H, W)`, K :math:`(T, 3, 3)`, valid like depth.
    """
    num, c, h, w = frames.shape
    z_t = depth[t, 0].reshape(-1)
    pts_out, col_out = [], []
    for s in range(max(0, t - radius), min(num, t + radius + 1)):
        if s == t:
            continue
        pts = _depth_to_points(depth[s], K[s])
        col = frames[s].reshape(c, -1).T
        if valid is not None:
            keep = valid[s].reshape(-1) > 0
            pts, col = pts[keep], col[keep]
        z = pts[:, 2]
        front = z > near
        pts, col, z = pts[front], col[front], z[front]
        uv = project_points(pts[None], K[t][None].to(pts.dtype))[0]
        ui = torch.floor(uv[:, 0] + 0.5).long()
        vi = torch.floor(uv[:, 1] + 0.5).long()
        inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
        surface = torch.zeros_like(z)
        surface[inside] = z_t[vi[inside] * w + ui[inside]].to(z.dtype)
        occluded = inside & (z > surface * (1 + DEPTH_TOL))
        if valid is not None:
            unknown = torch.zeros_like(inside)
            unknown[inside] = valid[t, 0].reshape(-1)[vi[inside] * w + ui[inside]] == 0
            occluded = occluded | unknown
        keep = occluded | ~inside
        pts_out.append(pts[keep])
        col_out.append(col[keep])
    if not pts_out:
        return depth.new_zeros(0, 3), frames.new_zeros(0, c)
    return torch.cat(pts_out), torch.cat(col_out)


# ------------------------------------------------------------------ splatting (splat.py)
def _project(points: Tensor, K: Tensor) -> Tensor:
    return project_points(points[None], K[None].to(points.dtype))[0]


def _pinholes(zq: Tensor, hit: Tensor, r: int) -> Tensor:
    """Quantised depths :math:`(H, W)` -> pixels with, on both sides along a row, a column or a
    diagonal, a covered pixel ``d <= 2 r`` away whose depth times ``1 + d PINHOLE_DEPTH_GAP`` is
    below their own; compared in float32. Written pixel by pixel: the oracle, not a fast version."""
    h, w = zq.shape
    own = zq.float()
    far = torch.where(hit, own, math.inf)
    pin = torch.zeros(h, w, dtype=torch.bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
                sides = []
                for sign in (-1, 1):
                    vals = [
                        float(far[y + sign * d * dy, x + sign * d * dx] * (1.0 + d * PINHOLE_DEPTH_GAP))
                        for d in range(1, 2 * r + 1)
                        if 0 <= y + sign * d * dy < h and 0 <= x + sign * d * dx < w
                    ]
                    sides.append(min(vals, default=math.inf))
                if sides[0] < float(own[y, x]) and sides[1] < float(own[y, x]):
                    pin[y, x] = True
    return pin


def _footprint_min(grid: Tensor, r: int, bias: float, idx_bits: int, levels: int, empty: int) -> Tensor:
    """Key grid :math:`(H, W)` -> min over each (2r+1)^2 neighbourhood, neighbours' depth x ``bias``,
    where no point landed or in a pinhole; elsewhere the pixel's own key."""
    h, w = grid.shape
    hit = grid != empty
    zq = ((grid >> idx_bits).double() * bias).clamp_(max=levels).long()
    biased = torch.where(hit, (zq << idx_bits) | (grid & ((1 << idx_bits) - 1)), empty)
    out = grid.clone()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if not (dy or dx):
                continue
            dst = out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
            src = biased[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
            torch.minimum(dst, src, out=dst)
    keep = hit & ~_pinholes(grid >> idx_bits, hit, r)
    return torch.where(keep, grid, out)


def _splat_hard(
    points: Tensor, colors: Tensor, K: Tensor, size: tuple[int, int], footprint: int, near: float
):
    """Z-buffer of points :math:`(N, 3)`, colours :math:`(N, C)`, K :math:`(3, 3)`: 63-bit keys
    (quantised depth, point index), ``amin`` per pixel (ties to the lower index).

    Returns ``(image (C, H, W), depth (1, H, W), mask (1, H, W))``.
    """
    h, w = size
    n, c = colors.shape
    hw = h * w
    z = points[:, 2]
    front = z > near
    if not bool(front.any()):
        zeros = points.new_zeros(1, h, w)
        return colors.new_zeros(c, h, w), zeros, zeros.clone()
    uv = _project(points, K)
    ui = torch.floor(uv[:, 0] + 0.5).long()
    vi = torch.floor(uv[:, 1] + 0.5).long()
    idx_bits = max(1, math.ceil(math.log2(n + 1)))
    idx_mask = (1 << idx_bits) - 1
    depth_levels = (1 << (62 - idx_bits)) - 1
    r = footprint // 2
    bias = 1.0 + FOOTPRINT_DEPTH_BIAS
    z_max = float(torch.where(front, z, 0).max()) * (bias if r else 1.0)
    ok = front & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    pix = torch.where(ok, vi * w + ui, hw)
    zq = (z.detach() * (depth_levels / z_max)).clamp_(0, depth_levels).long()
    key = (zq << idx_bits) | torch.arange(n, device=points.device)
    empty = torch.iinfo(torch.int64).max
    buf = torch.full((hw + 1,), empty, dtype=torch.int64, device=points.device)
    buf.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
    buf = buf[:hw]
    if r:
        buf = _footprint_min(buf.view(h, w), r, bias, idx_bits, depth_levels, empty).view(-1)
    hit = buf != empty
    winner = torch.where(hit, buf & idx_mask, 0)
    mask = hit.to(points.dtype)
    image = colors.T.contiguous().index_select(1, winner) * mask.to(colors.dtype)
    depth = z.index_select(0, winner) * mask
    return image.reshape(c, h, w), depth.view(1, h, w), mask.view(1, h, w)


def _splat_soft(
    points: Tensor, colors: Tensor, K: Tensor, size: tuple[int, int], beta: float, near: float,
    min_weight: float = 0.5,
):
    """Softmax splat of points :math:`(N, 3)`, colours :math:`(N, C)`, K :math:`(3, 3)`: bilinear
    weight x ``exp(-beta z / mean z)`` with a per-pixel max shift; mask ``sum(b) >= min_weight``.

    Returns ``(image (C, H, W), depth (1, H, W), mask (1, H, W))``.
    """
    h, w = size
    hw = h * w
    c = colors.shape[1]
    dev, dt = points.device, points.dtype
    z = points[:, 2]
    front = z > near
    count = front.sum()
    z_ref = (torch.where(front, z, 0).sum() / count.clamp_min(1)).clamp_min(near)
    uv = _project(points, K)
    u0, v0 = torch.floor(uv[:, 0].detach()), torch.floor(uv[:, 1].detach())
    fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
    u0, v0 = u0.long(), v0.long()
    pix_l, b_l = [], []
    bilinear = ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv))
    for du, dv, b in bilinear:
        uu, vv = u0 + du, v0 + dv
        ok = front & (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h) & (b.detach() > MIN_BILINEAR_WEIGHT)
        pix_l.append(torch.where(ok, vv * w + uu, hw))
        b_l.append(torch.where(ok, b, torch.ones_like(b)))
    pix, b = torch.cat(pix_l), torch.cat(b_l)
    z4 = z.repeat(4)
    logw = torch.log(b) - beta * z4 / z_ref
    shift = torch.full((hw + 1,), -torch.inf, dtype=dt, device=dev)
    shift.scatter_reduce_(0, pix, logw.detach(), reduce="amax", include_self=True)
    wgt = torch.exp(logw - shift[pix])
    den = torch.zeros(hw + 1, dtype=dt, device=dev).index_add(0, pix, wgt)[:hw]
    col4 = colors.T.repeat(1, 4)
    num = torch.zeros(c, hw + 1, dtype=colors.dtype, device=dev)
    num = num.index_add(1, pix, col4 * wgt.to(colors.dtype))
    zs = torch.zeros(hw + 1, dtype=dt, device=dev).index_add(0, pix, wgt * z4)[:hw]
    cover = torch.zeros(hw + 1, dtype=dt, device=dev).index_add(0, pix, b.detach())[:hw]
    mask = (cover >= min_weight).to(dt)
    safe = torch.where(mask > 0, den, torch.ones_like(den))
    image = num[:, :hw] / safe.to(colors.dtype) * mask.to(colors.dtype)
    depth = zs / safe * mask
    return image.reshape(c, h, w), depth.view(1, h, w), mask.view(1, h, w)


# ------------------------------------------------------------------ mask refinement (mask.py)
def _refine_mask(frames: Tensor, mask: Tensor, depth: Tensor, erode: int, dilate: int):
    """Dilate (filling new pixels with the window mean), then erode; all :math:`(T, *, H, W)`."""
    if dilate > 0:
        k = 2 * dilate + 1
        grown = F.max_pool2d(mask, k, stride=1, padding=dilate)
        weight = F.avg_pool2d(mask, k, stride=1, padding=dilate, count_include_pad=False)
        new = (grown > 0) & (mask == 0)
        safe = weight.clamp_min(1e-12)
        fill = F.avg_pool2d(frames * mask, k, stride=1, padding=dilate, count_include_pad=False) / safe
        frames = frames.where(~new, fill)
        dfill = F.avg_pool2d(depth * mask, k, stride=1, padding=dilate, count_include_pad=False) / safe
        depth = depth.where(~new, dfill)
        mask = grown
    if erode > 0:
        mask = -F.max_pool2d(-mask, 2 * erode + 1, stride=1, padding=erode)
    return frames * mask, mask, depth * mask


# ------------------------------------------------------------------ the renderer (render.py)
def _per_frame(k: Tensor, t: int) -> Tensor:
    return k.expand(t, 3, 3) if k.ndim == 2 else k


def reference_render(
    frames: Tensor,
    depth: Tensor,
    K: Tensor,
    c2w: Tensor,
    mode: str = "hard",
    footprint: int = 1,
    mask_erode: int = 0,
    mask_dilate: int = 0,
    fuse_neighbors: int = 0,
    source_mask: Tensor | None = None,
    K_target: Tensor | None = None,
    soft_beta: float = 50.0,
) -> Reference:
    """The anchor video of 75345d5's ``render_anchor`` (inputs assumed valid).

    Args:
        frames: :math:`(T, C, H, W)` float.
        depth: planar depth :math:`(T, 1, H, W)`.
        K: source intrinsics :math:`(3, 3)` or :math:`(T, 3, 3)`.
        c2w: target cameras relative to the source cameras, :math:`(T, 4, 4)`.
        mode: ``"hard"`` (z-buffer, odd ``footprint``) or ``"soft"`` (``soft_beta``).
        mask_erode, mask_dilate: mask refinement radii; fuse_neighbors: neighbour frames per side.
        source_mask: optional :math:`(T, 1, H, W)`; 0 pixels produce no point.
        K_target: target intrinsics :math:`(3, 3)` or :math:`(T, 3, 3)`; default ``K``.

    Returns:
        :class:`Reference` ``(frames (T, C, H, W), mask (T, 1, H, W), depth (T, 1, H, W))``.
    """
    t_len, c, h, w = frames.shape
    dtype = torch.promote_types(frames.dtype, depth.dtype) if depth.is_floating_point() else frames.dtype
    frames = frames.to(dtype)
    depth = depth.to(frames.device, dtype)
    Ks = _per_frame(K.to(frames.device, dtype), t_len)
    Kt = _per_frame(K_target.to(frames.device, dtype), t_len) if K_target is not None else Ks
    w2c = _invert_rigid(c2w.to(frames.device, dtype))
    shared = bool((Ks == Ks[:1]).all()) and not Ks.requires_grad
    shared_rays = unproject_meshgrid(h, w, Ks[0][None], device=Ks.device, dtype=Ks.dtype) if shared else None
    outs = []
    for t in range(t_len):
        pts = _depth_to_points(depth[t], Ks[t], rays=shared_rays)
        col = frames[t].reshape(c, -1).T
        if source_mask is not None:
            keep = source_mask[t].reshape(-1) > 0
            pts, col = pts[keep], col[keep]
        d_ok = depth[t][source_mask[t] > 0] if source_mask is not None else depth[t]
        near = NEAR_FRACTION * float(d_ok.detach().amax()) if d_ok.numel() else 1e-6
        if fuse_neighbors:
            extra_p, extra_c = _neighbor_points(frames, depth, Ks, t, fuse_neighbors, source_mask, near)
            pts, col = torch.cat([pts, extra_p.to(pts.dtype)]), torch.cat([col, extra_c])
        pts = _transform(w2c[t], pts)
        if mode == "hard":
            outs.append(_splat_hard(pts, col, Kt[t], (h, w), footprint, near))
        else:
            outs.append(_splat_soft(pts, col, Kt[t], (h, w), soft_beta, near))
    image = torch.stack([o[0] for o in outs])
    rdepth = torch.stack([o[1] for o in outs])
    mask = torch.stack([o[2] for o in outs]).to(image.dtype)
    image, mask, rdepth = _refine_mask(image, mask, rdepth, erode=mask_erode, dilate=mask_dilate)
    return Reference(frames=image, mask=mask, depth=rdepth)
