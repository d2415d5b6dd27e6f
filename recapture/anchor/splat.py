"""Forward splatting of camera-frame point clouds into an image: hard z-buffer and soft (differentiable).

Both take points already in the *target* camera frame (OpenCV: x right, y down, z forward) and the
target intrinsics, one cloud ``(N, 3)`` or a batch of equally sized clouds ``(B, N, 3)`` (a whole
clip in one call: the per-cloud arithmetic is identical, a batch only saves per-call overhead).
Pixel ``(u, v)`` with integer coordinates is a pixel centre (kornia's convention), so a point lands
in pixel ``(floor(u + 0.5), floor(v + 0.5))``.

The projection reproduces kornia's ``project_points`` operation by operation (``1 / z``, times
``x``, times ``f``, plus ``c``), so results are bit-for-bit those of the kornia call it replaces;
``tests/anchor/test_anchor_speed_parity.py`` pins them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from recapture.utils import RecaptureError

__all__ = ["SplatResult", "splat_hard", "splat_soft"]

# Footprint copies are pushed back by this relative depth: where several copies compete for an empty
# pixel (or a pinhole), the point that landed there itself beats an equally deep neighbour.
FOOTPRINT_DEPTH_BIAS = 0.01
# Pinholes: a pixel whose own point lies behind a nearer point on *both* sides of it (along a row, a
# column or a diagonal, within twice the footprint radius: the widest crack a footprint closes) is
# background seen through a crack in a nearer surface, which the footprint covers. A side point d
# pixels away counts as nearer only if it is more than d times this relative depth nearer, so a
# surface's own slope (a ground plane's rows at 64x96 are up to ~7% apart) never counts. Any other
# covered pixel keeps its own point: the footprint moves no surface and grows no edge over visible
# background, and the source camera reproduces the source.
PINHOLE_DEPTH_GAP = 0.10
# Soft splat: bilinear weights below this are dropped (kills float round-off leaks into neighbours,
# e.g. u = 4.9999999 on an identity warp; such contributions are invisible anyway).
MIN_BILINEAR_WEIGHT = 1e-4
# Clouds are splatted a few at a time, about this many points (soft: contributions) per batch: all
# temporaries then stay in the CPU caches and below the allocator's mmap threshold; bigger batches
# are slower on CPU, smaller ones pay per-call overhead.
CHUNK_POINTS = 1 << 18
# Scatter targets get this many extra bins for invalid entries (a power of two).
TRASH_BINS = 1024
# kornia's projection skips the divide for |z| <= this (the point keeps a finite placeholder).
KORNIA_Z_EPS = 1e-8


SplatResult = tuple[Tensor, Tensor, Tensor]
"""``(image (C, H, W), depth (1, H, W), mask (1, H, W))`` (a leading ``B`` for batched input);
image and depth are 0 where mask is 0."""


def _as_batch(
    points: Tensor, colors: Tensor, K: Tensor, near: float | Sequence[float]
) -> tuple[Tensor, Tensor, Tensor, list[float], bool]:
    """Check shapes; return points ``(B, N, 3)``, colors ``(B, C, N)``, K ``(B, 3, 3)``, one near per cloud."""
    batched = points.ndim == 3
    if points.ndim not in (2, 3) or points.shape[-1] != 3:
        raise RecaptureError(f"points must be (N, 3) or (B, N, 3), got {tuple(points.shape)}")
    if colors.ndim != points.ndim or colors.shape[:-1] != points.shape[:-1]:
        raise RecaptureError(
            f"colors must be (..., N, C) matching points {tuple(points.shape)}, got {tuple(colors.shape)}"
        )
    if not batched:
        points, colors = points[None], colors[None]
    b = points.shape[0]
    if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3) or (K.ndim == 3 and K.shape[0] != b):
        raise RecaptureError(f"K must be (3, 3) or ({b}, 3, 3), got {tuple(K.shape)}")
    nears = [float(near)] * b if isinstance(near, (int, float)) else [float(x) for x in near]
    if len(nears) != b:
        raise RecaptureError(f"near must be a number or one per cloud ({b}), got {len(nears)} values")
    return points, colors.transpose(1, 2), K.expand(b, 3, 3).to(points.dtype), nears, batched


def _trash(m: int, start: int, device: torch.device) -> Tensor:
    """Trash-bin index for each of ``m`` entries: ``start + (i mod TRASH_BINS)``, ``(m,)``.

    Spreading the discarded entries over many bins instead of one keeps a scatter from turning
    into a chain of dependent read-modify-writes on a single address (2x slower scatters).
    """
    return torch.arange(m, device=device).bitwise_and_(TRASH_BINS - 1).add_(start)


def _pixel_coords(xyz: Tensor, K: Tensor, guard: bool) -> tuple[Tensor, Tensor]:
    """Sub-pixel ``(u, v)`` of points ``xyz`` ``(B, 3, N)``, each ``(B, N)``, exactly as kornia's
    ``project_points`` rounds them.

    ``guard`` keeps kornia's rule for ``|z| <= 1e-8`` (scale 1 instead of ``1 / z``); callers may
    drop it when no such point can be kept (``near >= 1e-8``) and no gradient flows.
    """
    x, y, z = xyz.unbind(1)
    if guard:
        far = z.abs() > KORNIA_Z_EPS
        scale = torch.where(far, torch.where(far, z, 1.0).reciprocal(), 1.0)
    else:
        scale = z.reciprocal()
    u = scale * x * K[:, 0, 0, None] + K[:, 0, 2, None]
    v = scale * y * K[:, 1, 1, None] + K[:, 1, 2, None]
    return u, v


def _footprint_min(grid: Tensor, r: int, bias: float, idx_bits: int, levels: int, empty: int) -> Tensor:
    """The footprint rule on z-buffer keys ``grid`` ``(B, H, W)`` (``empty`` where no point landed).

    * An empty pixel, or a pinhole (:func:`_pinholes`), takes the nearest key among its own and its
      ``(2r+1)^2`` neighbours' keys, the neighbours' depth part scaled by ``bias``: as if every
      point were splatted to a ``k x k`` block at a depth handicap. Holes shrink, slant pinholes close.
    * Every other pixel keeps the point that landed in it.

    Returns:
        ``(B, H, W)`` keys.
    """
    hit = grid != empty
    zq = grid >> idx_bits
    box = _box_min(grid, hit, zq, r, bias, idx_bits, levels, empty)
    keep = hit & ~_pinholes(zq, hit, r)
    return torch.where(keep, grid, box, out=box)


def _box_min(
    grid: Tensor, hit: Tensor, zq: Tensor, r: int, bias: float, idx_bits: int, levels: int, empty: int
) -> Tensor:
    """Per pixel, the minimum of its own key and its ``(2r+1)^2`` neighbours' keys at a depth handicap.

    The neighbourhood minimum is separable (rows, then columns): 4r shifted minimums instead of
    (2r+1)^2 - 1. Including the pixel's own handicapped key in that box is harmless: the depth part
    was quantised against ``bias`` times the farthest depth, so it is at most ``levels / bias`` and
    its handicapped copy never drops below the key itself.
    """
    zb = (zq.double() * bias).clamp_(max=levels).long()
    biased = torch.where(hit, (zb << idx_bits) | (grid & ((1 << idx_bits) - 1)), empty)
    for dim in (-1, -2):
        src, size = biased, biased.shape[dim]
        biased = src.clone()
        for d in range(1, min(r, size - 1) + 1):
            lo, hi = biased.narrow(dim, d, size - d), biased.narrow(dim, 0, size - d)
            torch.minimum(lo, src.narrow(dim, 0, size - d), out=lo)
            torch.minimum(hi, src.narrow(dim, d, size - d), out=hi)
    return torch.minimum(grid, biased, out=biased)


# Opposite neighbour pairs a pinhole test looks along: a row, a column and the two diagonals.
_AXES = ((0, 1), (1, 0), (1, 1), (1, -1))


def _pinholes(zq: Tensor, hit: Tensor, r: int) -> Tensor:
    """Pixels ``(B, H, W)`` whose own point lies behind nearer points on both sides of them along a
    row, a column or a diagonal, within ``2 r`` pixels: the cracks up to ``2 r`` wide that the
    ``(2r+1)^2`` footprint fills, seen through to a farther surface.

    A side point ``d`` pixels away counts if its depth times ``1 + d * PINHOLE_DEPTH_GAP`` is below
    the pixel's own. Diagonals count so that crossing cracks (an empty row across a column of
    background) close too; a pixel beside a straight edge has nearer points on one side of every
    line through it, so edges do not grow over visible pixels (only a pixel in the crook of a sharp
    concave corner can be taken). ``zq``: quantised depths (any monotonic scale); pixels where
    ``hit`` is false never count; past the border there is no side. float32 is plenty for these
    tests and halves the memory traffic of int64.
    """
    h, w = zq.shape[-2:]
    reach = 2 * r
    own = zq.float()
    far = torch.where(hit, own, math.inf)
    far = F.pad(far, (reach, reach, reach, reach), value=math.inf)
    # ahead[d - 1]: every depth pushed back by d gaps, for the side points d pixels away
    ahead = [far * (1.0 + d * PINHOLE_DEPTH_GAP) for d in range(1, reach + 1)]

    def at(d: int, dy: int, dx: int) -> Tensor:  # pixel (y + d dy, x + d dx)'s pushed-back depth
        return ahead[d - 1][..., reach + d * dy : reach + d * dy + h, reach + d * dx : reach + d * dx + w]

    pin = torch.zeros_like(hit)
    for ay, ax in _AXES:
        before, after = at(1, -ay, -ax), at(1, ay, ax)
        for d in range(2, reach + 1):  # the nearest (after push-back) over the whole side
            before, after = torch.minimum(before, at(d, -ay, -ax)), torch.minimum(after, at(d, ay, ax))
        pin.logical_or_((before < own).logical_and_(after < own))
    return pin


def splat_hard(
    points: Tensor,
    colors: Tensor,
    K: Tensor,
    size: tuple[int, int],
    footprint: int = 1,
    near: float | Sequence[float] = 1e-6,
) -> SplatResult:
    """Z-buffer splat: every pixel takes the colour of the nearest point that lands in it.

    Deterministic: each point gets a 63-bit key ``(quantised depth, point index)`` and
    ``scatter_reduce("amin")`` keeps the smallest key per pixel, so ties go to the lower index
    whatever the thread schedule. Not differentiable w.r.t. geometry (use :func:`splat_soft`);
    gradients reach ``colors`` and the rendered depth's ``z``. With ``footprint=k > 1`` every point
    also covers the empty pixels of its ``k x k`` neighbourhood (at a 1% depth handicap) and the
    pinholes in it (pixels whose own point lies clearly behind nearer points on both sides along a
    row, column or diagonal: :func:`_pinholes`), so surfaces seen at a slant or magnified do not
    break into pinholes through which the background or nothing shows; a pixel that received a
    point otherwise keeps it, so the source camera gives the source exactly. ``footprint=1`` is
    exact nearest-pixel splatting.

    Args:
        points: target-camera points ``(N, 3)``, or ``(B, N, 3)`` for B clouds.
        colors: per-point values ``(N, C)`` (or ``(B, N, C)``); the fastest layout is a
            transposed view of ``(B, C, N)`` memory, e.g. ``frames.flatten(2).transpose(1, 2)``.
        K: target intrinsics ``(3, 3)`` or ``(B, 3, 3)`` in pixels.
        size: output ``(H, W)``.
        footprint: odd splat size in pixels (1, 3, 5, ...).
        near: points with ``z <= near`` (behind or at the camera) are dropped; one per cloud or a
            number for all.

    Returns:
        ``(image (C, H, W), depth (1, H, W), mask (1, H, W))``, with a leading ``B`` for batched
        input; 0 where nothing landed.
    """
    pts, cols, Kb, nears, batched = _as_batch(points, colors, K, near)
    step = max(1, CHUNK_POINTS // max(1, pts.shape[1]))
    parts = [
        _hard_chunk(
            pts[i : i + step], cols[i : i + step], Kb[i : i + step], size, footprint, nears[i : i + step]
        )
        for i in range(0, pts.shape[0], step)
    ]
    image, depth, mask = (torch.cat(p) if len(parts) > 1 else p[0] for p in zip(*parts, strict=True))
    return (image, depth, mask) if batched else (image[0], depth[0], mask[0])


def _hard_chunk(
    pts: Tensor, cols: Tensor, Kb: Tensor, size: tuple[int, int], footprint: int, nears: list[float]
) -> SplatResult:
    """:func:`splat_hard` of a few clouds: points ``(B, N, 3)``, colours ``(B, C, N)``."""
    b, n, _ = pts.shape
    h, w = size
    hw = h * w
    dev, dt = pts.device, pts.dtype
    xyz = pts.transpose(1, 2).contiguous()  # planar (B, 3, N): every later pass reads contiguous rows
    z = xyz[:, 2]
    zd = z.detach()
    near_t = torch.tensor(nears, dtype=dt, device=dev)
    zmax, lit = _farthest_in_front(zd, near_t)

    # Keys: quantised depth in the high bits, point index in the low bits; invalid points go to
    # trash bins after the h*w pixels (no boolean indexing on the hot path). `empty` is above every key
    # (depth levels can round up to 2^(62 - idx_bits)) and has zero index bits, so `key & idx_mask`
    # gives point 0 for empty pixels without a select.
    idx_bits = max(1, math.ceil(math.log2(n + 1)))
    idx_mask = (1 << idx_bits) - 1
    depth_levels = (1 << (62 - idx_bits)) - 1
    empty = (1 << 63) - (1 << idx_bits)
    r = footprint // 2
    bias = 1.0 + FOOTPRINT_DEPTH_BIAS
    scales = [
        depth_levels / (zm * (bias if r else 1.0)) if on else 0.0
        for zm, on in zip(zmax.tolist(), lit.tolist(), strict=True)
    ]
    u, v = _pixel_coords(xyz.detach(), Kb.detach(), guard=min(nears) < KORNIA_Z_EPS)
    u.add_(0.5)
    v.add_(0.5)
    # floor(u) in [0, w)  <=>  u in [0, w); there the truncating cast equals floor
    ok = (zd > near_t[:, None]) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pix = v.long().mul_(w).add_(u.long())
    pix = torch.where(ok, pix, _trash(n, hw, dev))
    key = (zd * torch.tensor(scales, dtype=dt, device=dev)[:, None]).clamp_(0, depth_levels).long()
    key.bitwise_left_shift_(idx_bits).bitwise_or_(torch.arange(n, device=dev))
    buf = torch.full((b, hw + TRASH_BINS), empty, dtype=torch.int64, device=dev)
    buf.scatter_reduce_(1, pix, key, reduce="amin", include_self=True)
    grid = buf[:, :hw]
    if r:
        grid = _footprint_min(grid.unflatten(1, (h, w)), r, bias, idx_bits, depth_levels, empty).flatten(1)
    return _hard_winners(grid, cols, z, lit, idx_mask, empty, size)


def _farthest_in_front(zd: Tensor, near_t: Tensor) -> tuple[Tensor, Tensor]:
    """Per cloud: the farthest depth ``(B,)`` and whether any point is in front (``> near``)."""
    # the farthest point is in front iff any is; then it is also the farthest point in front
    zmax = zd.amax(1)
    if bool(zmax.isnan().any()):
        zmax = torch.where(zd > near_t[:, None], zd, 0).amax(1)
    return zmax, zmax > near_t


def _hard_winners(
    grid: Tensor, cols: Tensor, z: Tensor, lit: Tensor, idx_mask: int, empty: int, size: tuple[int, int]
) -> SplatResult:
    """Image, depth and mask from the z-buffer keys ``grid`` ``(B, H W)`` (``empty``: no point)."""
    b, c = cols.shape[:2]
    h, w = size
    hit = grid != empty
    winner = grid & idx_mask
    mask = hit.to(z.dtype)
    image = cols.gather(2, winner[:, None].expand(b, c, h * w)) * mask.to(cols.dtype)[:, None]
    depth = z.gather(1, winner) * mask
    image, depth, mask = image.view(b, c, h, w), depth.view(b, 1, h, w), mask.view(b, 1, h, w)
    if not bool(lit.all()):  # no point in front at all: plain zeros, as for an empty cloud
        off = ~lit[:, None, None, None]
        image, depth, mask = image.masked_fill(off, 0), depth.masked_fill(off, 0), mask.masked_fill(off, 0)
    return image, depth, mask


def splat_soft(
    points: Tensor,
    colors: Tensor,
    K: Tensor,
    size: tuple[int, int],
    beta: float = 50.0,
    near: float | Sequence[float] = 1e-6,
    min_weight: float = 0.5,
) -> SplatResult:
    """Differentiable softmax splatting: bilinear weights times a depth-dependent softmax weight.

    Each point spreads over its 4 surrounding pixels with bilinear weights ``b``; a pixel's colour
    is ``sum(b exp(-beta z / z_ref) c) / sum(b exp(-beta z / z_ref))`` (``z_ref``: the mean point
    depth of the cloud, so ``beta`` is scale-free: a surface 10% behind another gets
    ``exp(-0.1 beta)`` of the weight). The softmax is evaluated stably with a per-pixel max shift
    (which cancels exactly, so it carries no gradient). The output is differentiable w.r.t.
    colours, point positions (hence depth and camera pose) and K. The mask is
    ``sum(b) >= min_weight`` (not differentiable).

    Args:
        points: target-camera points ``(N, 3)``, or ``(B, N, 3)`` for B clouds.
        colors: per-point values ``(N, C)`` (or ``(B, N, C)``).
        K: target intrinsics ``(3, 3)`` or ``(B, 3, 3)``.
        size: output ``(H, W)``.
        beta: depth sharpness (larger: closer to a hard z-buffer).
        near: points with ``z <= near`` are dropped; one per cloud or a number for all.
        min_weight: total bilinear weight a pixel needs to count as covered.

    Returns:
        ``(image (C, H, W), depth (1, H, W), mask (1, H, W))``, with a leading ``B`` for batched
        input; 0 where the mask is 0.
    """
    pts, cols, Kb, nears, batched = _as_batch(points, colors, K, near)
    b, h, w = pts.shape[0], *size
    per_cloud = 4 * max(1, pts.shape[1])
    step = max(1, CHUNK_POINTS // per_cloud)
    if per_cloud <= 2 * CHUNK_POINTS:
        # one cloud per thread at least: each cloud's row is scattered by its own thread; past about
        # twice the budget a second cloud's rows no longer fit the caches and cost more than that
        step = max(step, torch.get_num_threads())
    starts = range(0, b, step)
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (pts, cols, Kb))
    # several chunks without gradients: each writes into its slice of the result (no concatenation)
    out = None
    if len(starts) > 1 and not grad:
        out = (
            torch.empty(b, cols.shape[1], h * w, dtype=cols.dtype, device=pts.device),
            torch.empty(b, 1, h * w, dtype=pts.dtype, device=pts.device),
            torch.empty(b, 1, h * w, dtype=pts.dtype, device=pts.device),
        )
    padded = (h + 2) * (w + 2)  # the bins of the image with its border (see _soft_chunk)
    trash = _trash(pts.shape[1], padded, pts.device).to(_bin_dtype(pts.dtype, padded))
    parts = [
        _soft_chunk(
            pts[i : i + step],
            cols[i : i + step],
            Kb[i : i + step],
            size,
            beta,
            nears[i : i + step],
            min_weight,
            trash,
            None if out is None else tuple(o[i : i + step] for o in out),
        )
        for i in starts
    ]
    if out is not None:
        image, depth, mask = (o.unflatten(2, (h, w)) for o in out)
    else:
        image, depth, mask = (torch.cat(p) if len(parts) > 1 else p[0] for p in zip(*parts, strict=True))
    return (image, depth, mask) if batched else (image[0], depth[0], mask[0])


def _softmax_weights(log_b: Tensor, zz: Tensor, pix: Tensor, bins: int, nonneg: bool) -> Tensor:
    """``exp(logw - max of logw in its bin)`` for ``logw = log_b - zz``: ``(B, 4 N)``.

    With ``nonneg`` (``beta >= 0`` and ``near >= 0``: ``zz >= 0`` wherever a point counts) it works
    on ``-logw = zz - log_b >= 0``, whose float bits order like integers, so the per-bin extreme is
    an integer ``scatter_reduce`` (several times faster than the NaN-aware float one). IEEE
    subtraction is exactly antisymmetric, so ``min(-logw) - (-logw)`` has the bits of
    ``logw - max(logw)``. Trash entries only need a finite weight: their ``zz`` is clamped at 0.

    Args:
        log_b: log bilinear weights ``(B, 4, N)``.
        zz: ``beta z / z_ref`` ``(B, N)``.
        pix: bin of every entry in its cloud's row ``(B, 4 N)``.
        bins: bins per row.
        nonneg: whether the integer path applies.
    """
    b = pix.shape[0]
    if not nonneg:
        logw = (log_b - zz[:, None]).view(b, -1)
        shift = torch.full((b, bins), -torch.inf, dtype=logw.dtype, device=logw.device)
        shift.scatter_reduce_(1, pix, logw.detach(), reduce="amax", include_self=True)
        return torch.exp(logw - shift.gather(1, pix))
    neg = (zz.clamp_min(0)[:, None] - log_b).view(b, -1)
    itype = {2: torch.int16, 4: torch.int32, 8: torch.int64}[neg.element_size()]
    low = torch.full((b, bins), torch.iinfo(itype).max, dtype=itype, device=neg.device)
    low.scatter_reduce_(1, pix, neg.detach().view(itype), reduce="amin", include_self=True)
    return torch.exp(low.gather(1, pix).view(neg.dtype) - neg)


def _bin_dtype(coords: torch.dtype, hw: int) -> torch.dtype:
    """The dtype :func:`_corner_bins` computes bins in: the coordinates' float dtype where every bin
    (pixels and trash) is an exactly representable integer there (float32: up to ~16 M pixels),
    which halves the memory traffic of int64; else int64."""
    exact = coords.is_floating_point and hw + TRASH_BINS <= 2 / torch.finfo(coords).eps
    return coords if exact else torch.int64


def _corner_bins(u0: Tensor, v0: Tensor, ok: Tensor, w: int, trash: Tensor) -> Tensor:
    """Bin of each corner contribution ``(B, 4, N)`` (int64): pixel ``v0 w + u0`` plus the corner's
    offset ``(0, 1, w, w + 1)`` where ``ok``, else the entry's trash bin.

    ``u0``, ``v0``: floored coordinates ``(B, N)`` (where ``ok`` they lie in ``[-1, w)`` and
    ``[-1, h)``); ``trash``: :func:`_trash` ``(N,)`` in the :func:`_bin_dtype` the bins are computed in.
    """
    dtype = trash.dtype
    base = (v0.to(dtype) * w + u0.to(dtype))[:, None]
    corner = torch.tensor([0, 1, w, w + 1], dtype=dtype, device=u0.device)[:, None]
    return torch.where(ok, base + corner, trash).long()


def _soft_chunk(
    pts: Tensor,
    cols: Tensor,
    Kb: Tensor,
    size: tuple[int, int],
    beta: float,
    nears: list[float],
    min_weight: float,
    trash: Tensor,
    out: SplatResult | None = None,
) -> SplatResult:
    """:func:`splat_soft` of a few clouds: points ``(B, N, 3)``, colours ``(B, C, N)`` (``trash``: the
    chunks' shared trash bins, see :func:`_corner_bins`; ``out``: see :func:`_soft_resolve`)."""
    b, n, _ = pts.shape
    h, w = size
    dev, dt = pts.device, pts.dtype
    xyz = pts.transpose(1, 2).contiguous()  # planar (B, 3, N): every later pass reads contiguous rows
    z = xyz[:, 2]
    near_t = torch.tensor(nears, dtype=dt, device=dev)[:, None]
    front = z > near_t
    count = front.sum(1, keepdim=True)
    # one sum per cloud: a batched reduction could associate the float additions differently
    zsum = torch.stack([zf.sum() for zf in torch.where(front, z, 0)])[:, None]
    z_ref = (zsum / count.clamp_min(1)).clamp_min(near_t)
    # kornia's |z| <= 1e-8 rule only matters for points that count (a tiny near) and for gradients
    grad = torch.is_grad_enabled() and (pts.requires_grad or Kb.requires_grad)
    u, v = _pixel_coords(xyz, Kb, guard=grad or min(nears) < KORNIA_Z_EPS)
    u0, v0 = torch.floor(u.detach()), torch.floor(v.detach())
    fu, fv = u - u0, v - v0
    # corners in the order (du, dv) = (0, 0), (1, 0), (0, 1), (1, 1): (B, 4, N)
    bu, bv = torch.stack([1 - fu, fu], 1), torch.stack([1 - fv, fv], 1)
    wts = (bv[:, :, None] * bu[:, None]).reshape(b, 4, n)
    # One row of pixel bins per cloud, scattered along the row (clouds in parallel threads); per bin
    # the additions keep the point order. The rows hold the image with a one-pixel border, which
    # takes the corners that fall just off the image (and is dropped), so a point's own in-view test
    # decides for its 4 corners. Other contributions (behind the camera, out of view, negligible
    # weight) go to trash bins after the pixels with a placeholder weight of 1 (finite log, zero
    # gradient).
    in_view = front & (u0 >= -1) & (u0 < w) & (v0 >= -1) & (v0 < h)
    ok = (wts.detach() > MIN_BILINEAR_WEIGHT) & in_view[:, None]
    padded = (h + 2) * (w + 2)
    pix = _corner_bins(u0.detach() + 1, v0.detach() + 1, ok, w + 2, trash).view(b, 4 * n)
    wts = torch.where(ok, wts, 1.0)
    nonneg = math.copysign(1.0, beta) > 0 and min(nears) >= 0
    wgt = _softmax_weights(torch.log(wts), beta * z / z_ref, pix, padded + TRASH_BINS, nonneg)
    return _soft_resolve(pix, wts, wgt, cols, z, min_weight, size, out)


def _soft_resolve(
    pix: Tensor,
    wts: Tensor,
    wgt: Tensor,
    cols: Tensor,
    z: Tensor,
    min_weight: float,
    size: tuple[int, int],
    out: SplatResult | None = None,
) -> SplatResult:
    """Per-pixel sums of the 4 N contributions per cloud (bins ``pix`` of the image with a one-pixel
    border, then trash): image, depth and mask.

    ``out``: ``(B, C, H W)``, ``(B, 1, H W)`` and ``(B, 1, H W)`` tensors to write the results into
    (no gradients), instead of new ones.
    """
    b, n = z.shape
    c = cols.shape[1]
    h, w = size
    padded = (h + 2) * (w + 2)
    dev, dt = z.device, z.dtype

    def bins(values: Tensor, sums: Tensor | None = None) -> Tensor:
        """The image's bins ``(B, H, W)`` (a view) after summing ``values`` into ``sums``."""
        # scatter_add adds in index order along a row, as index_add does (same bits), and is faster
        if sums is None:
            sums = torch.zeros(b, padded + TRASH_BINS, dtype=values.dtype, device=dev)
        sums.scatter_add_(1, pix, values.reshape(b, 4 * n))
        return sums[:, :padded].unflatten(1, (h + 2, w + 2))[:, 1:-1, 1:-1]

    den = bins(wgt)
    wgt_c = wgt.view(b, 4, n).to(cols.dtype)
    num = torch.zeros(b, c, padded + TRASH_BINS, dtype=cols.dtype, device=dev)  # one buffer, no stacking
    for ch in range(c):
        bins(cols[:, ch, None] * wgt_c, num[:, ch])
    num = num[:, :, :padded].unflatten(2, (h + 2, w + 2))[..., 1:-1, 1:-1]
    zs = bins(wgt.view(b, 4, n) * z[:, None])
    cover = bins(wts.detach())
    mask = (cover >= min_weight).to(dt)
    safe = torch.where(mask > 0, den, torch.ones_like(den))
    if out is None:
        image = num / safe.to(cols.dtype)[:, None] * mask.to(cols.dtype)[:, None]
        depth = zs / safe * mask
        return image, depth[:, None], mask[:, None]
    image, depth, mask_out = (o.unflatten(2, (h, w)) for o in out)
    torch.div(num, safe.to(cols.dtype)[:, None], out=image).mul_(mask.to(cols.dtype)[:, None])
    torch.div(zs, safe, out=depth[:, 0]).mul_(mask)
    mask_out[:, 0].copy_(mask)
    return out
