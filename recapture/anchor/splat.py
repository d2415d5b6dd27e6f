"""Forward splatting of camera-frame point clouds into an image: hard z-buffer and soft (differentiable).

Both take points already in the *target* camera frame (OpenCV: x right, y down, z forward) and the
target intrinsics; kornia does the projection. Pixel ``(u, v)`` with integer coordinates is a pixel
centre (kornia's convention), so a point lands in pixel ``(floor(u + 0.5), floor(v + 0.5))``.
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.camera import project_points
from torch import Tensor

__all__ = ["SplatResult", "splat_hard", "splat_soft"]

# Footprint copies are pushed back by this relative depth so that, on one surface, a point's own
# pixel beats its neighbours' footprints, while a genuinely nearer surface still covers holes.
FOOTPRINT_DEPTH_BIAS = 0.01
# Soft splat: bilinear weights below this are dropped (kills float round-off leaks into neighbours,
# e.g. u = 4.9999999 on an identity warp; such contributions are invisible anyway).
MIN_BILINEAR_WEIGHT = 1e-4


SplatResult = tuple[Tensor, Tensor, Tensor]
"""``(image (C, H, W), depth (1, H, W), mask (1, H, W))``; image and depth are 0 where mask is 0."""


def _project(points: Tensor, K: Tensor) -> Tensor:
    return project_points(points[None], K[None].to(points.dtype))[0]


def _footprint_min(grid: Tensor, r: int, bias: float, idx_bits: int, levels: int, empty: int) -> Tensor:
    """Grow each pixel's winning key over its (2r+1)^2 neighbourhood at a depth handicap.

    Splatting every point to a k x k block and keeping the minimum key per pixel equals taking,
    per pixel, the minimum over its neighbourhood of the single-pixel z-buffer (neighbours'
    keys with their depth part scaled by ``bias``): 8 shifted minimums instead of a 9x larger
    scatter.
    """
    h, w = grid.shape
    hit = grid != empty
    zq = ((grid >> idx_bits).double() * bias).clamp_(max=levels).long()
    biased = torch.where(hit, (zq << idx_bits) | (grid & ((1 << idx_bits) - 1)), empty)
    out = grid.clone()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if not (dy or dx):
                continue
            # the point in pixel (y - dy, x - dx) covers pixel (y, x)
            dst = out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
            src = biased[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
            torch.minimum(dst, src, out=dst)
    return out


def splat_hard(
    points: Tensor,
    colors: Tensor,
    K: Tensor,
    size: tuple[int, int],
    footprint: int = 1,
    near: float = 1e-6,
) -> SplatResult:
    """Z-buffer splat: every pixel takes the colour of the nearest point that lands in it.

    Deterministic: each point gets a 63-bit key ``(quantised depth, point index)`` and
    ``scatter_reduce("amin")`` keeps the smallest key per pixel, so ties go to the lower index
    whatever the thread schedule. Not differentiable (use :func:`splat_soft` for gradients). With ``footprint=k > 1`` every point also covers its ``k x k``
    neighbourhood (at a 1% depth handicap), so surfaces seen at a slant do not break into pinholes
    through which the background shows; ``footprint=1`` is exact nearest-pixel splatting.

    Args:
        points: target-camera points :math:`(N, 3)`.
        colors: per-point values :math:`(N, C)`.
        K: target intrinsics :math:`(3, 3)` in pixels.
        size: output ``(H, W)``.
        footprint: odd splat size in pixels (1, 3, 5, ...).
        near: points with ``z <= near`` (behind or at the camera) are dropped.

    Returns:
        ``(image (C, H, W), depth (1, H, W), mask (1, H, W))``; 0 where nothing landed.
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

    # Keys: quantised depth in the high bits, point index in the low bits; invalid points go to a
    # trash bin at index h*w (no boolean indexing on the hot path).
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
    # gather from a (C, N) layout: frames give exactly that, and it is much faster than rows of (N, C)
    image = colors.T.contiguous().index_select(1, winner) * mask.to(colors.dtype)
    depth = z.index_select(0, winner) * mask
    return image.reshape(c, h, w), depth.view(1, h, w), mask.view(1, h, w)


def splat_soft(
    points: Tensor,
    colors: Tensor,
    K: Tensor,
    size: tuple[int, int],
    beta: float = 50.0,
    near: float = 1e-6,
    min_weight: float = 0.5,
) -> SplatResult:
    """Differentiable softmax splatting: bilinear weights times a depth-dependent softmax weight.

    Each point spreads over its 4 surrounding pixels with bilinear weights ``b``; a pixel's colour
    is ``sum(b exp(-beta z / z_ref) c) / sum(b exp(-beta z / z_ref))`` (``z_ref``: the mean point
    depth, so ``beta`` is scale-free: a surface 10% behind another gets ``exp(-0.1 beta)`` of the
    weight). The softmax is evaluated stably with a per-pixel max shift (which cancels exactly, so
    it carries no gradient). The output is differentiable w.r.t. colours, point positions (hence
    depth and camera pose) and K. The mask is ``sum(b) >= min_weight`` (not differentiable).

    Args:
        points: target-camera points :math:`(N, 3)`.
        colors: per-point values :math:`(N, C)`.
        K: target intrinsics :math:`(3, 3)`.
        size: output ``(H, W)``.
        beta: depth sharpness (larger: closer to a hard z-buffer).
        near: points with ``z <= near`` are dropped.
        min_weight: total bilinear weight a pixel needs to count as covered.

    Returns:
        ``(image (C, H, W), depth (1, H, W), mask (1, H, W))``; 0 where the mask is 0.
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
    # Invalid contributions (behind the camera, off-image, negligible weight) go to a trash bin at
    # index h*w with a placeholder weight of 1 (finite log, zero gradient): no boolean indexing.
    pix_l, b_l = [], []
    for du, dv, b in (
        (0, 0, (1 - fu) * (1 - fv)),
        (1, 0, fu * (1 - fv)),
        (0, 1, (1 - fu) * fv),
        (1, 1, fu * fv),
    ):
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
    col4 = colors.T.repeat(1, 4)  # (C, 4N): per-channel rows make index_add along dim 1 cheap
    num = torch.zeros(c, hw + 1, dtype=colors.dtype, device=dev).index_add(
        1, pix, col4 * wgt.to(colors.dtype)
    )
    zs = torch.zeros(hw + 1, dtype=dt, device=dev).index_add(0, pix, wgt * z4)[:hw]
    cover = torch.zeros(hw + 1, dtype=dt, device=dev).index_add(0, pix, b.detach())[:hw]
    mask = (cover >= min_weight).to(dt)
    safe = torch.where(mask > 0, den, torch.ones_like(den))
    image = num[:, :hw] / safe.to(colors.dtype) * mask.to(colors.dtype)
    depth = zs / safe * mask
    return image.reshape(c, h, w), depth.view(1, h, w), mask.view(1, h, w)
