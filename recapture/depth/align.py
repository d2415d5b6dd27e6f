"""Disparity-to-depth mapping and temporal scale/shift alignment of per-frame depth."""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import Tensor

from recapture.depth.base import DisparityMapping
from recapture.utils import RecaptureError, check_video

log = logging.getLogger(__name__)

__all__ = ["align_depth_scales", "disparity_to_depth"]


def _quantile(x: Tensor, q: float) -> Tensor:
    # torch.quantile refuses inputs above 2**24 elements: subsample deterministically.
    flat = x.flatten().float()
    if flat.numel() > 4_000_000:
        flat = flat[:: flat.numel() // 4_000_000 + 1]
    return torch.quantile(flat, q)


def disparity_to_depth(disparity: Tensor, mapping: DisparityMapping | None = None) -> Tensor:
    """Map disparity-like values to planar depth (see :class:`DisparityMapping` for the formula).

    Args:
        disparity: ``(T, 1, H, W)`` (any shape works); larger means nearer.
        mapping: the mapping; default ``DisparityMapping()`` (near/far planes 1 and 10).

    Returns:
        planar depth, same shape, finite and in ``[near, far]`` for ``mode="near_far"``.
    """
    mapping = mapping or DisparityMapping()
    disp = disparity.float()
    if not bool(torch.isfinite(disp).all()):
        raise RecaptureError("disparity contains NaN/inf values; check the depth model or file")
    if mapping.mode == "inverse":
        if bool((disp <= 0).any()):
            raise RecaptureError(
                "disparity_mapping.mode='inverse' needs disparity > 0 everywhere; use mode 'near_far' "
                "for relative disparity"
            )
        return 1.0 / disp
    lo = _quantile(disp, mapping.low_percentile / 100)
    hi = _quantile(disp, mapping.high_percentile / 100)
    if not bool(hi > lo):
        lo, hi = disp.min(), disp.max()
    if not bool(hi > lo):
        log.warning("depth: disparity is constant (%.4g); using a constant depth", float(lo))
        return torch.full_like(disp, (mapping.near * mapping.far) ** 0.5)
    n = ((disp - lo) / (hi - lo)).clamp(0, 1)
    inv = 1.0 / mapping.far + n * (1.0 / mapping.near - 1.0 / mapping.far)
    return 1.0 / inv


def _fit_stats(x: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    med_x, med_r = x.median(), ref.median()
    mad_x, mad_r = (x - med_x).abs().median(), (ref - med_r).abs().median()
    scale = mad_r / mad_x if bool(mad_x > 0) else torch.ones_like(mad_x)
    return scale, med_r - scale * med_x


def _fit_lstsq(x: Tensor, ref: Tensor, keep: float = 0.8) -> tuple[Tensor, Tensor]:
    a = torch.stack([x, torch.ones_like(x)], 1)
    sol = torch.linalg.lstsq(a, ref[:, None]).solution[:, 0]
    # One trimmed refit: moving objects and occlusion edges are the largest residuals.
    res = (a @ sol - ref).abs()
    inliers = res <= _quantile(res, keep)
    if int(inliers.sum()) >= 2:
        sol = torch.linalg.lstsq(a[inliers], ref[inliers, None]).solution[:, 0]
    return sol[0], sol[1]


def align_depth_scales(
    depth: Tensor,
    reference: int = 0,
    space: Literal["disparity", "depth"] = "disparity",
    method: Literal["stats", "lstsq"] = "stats",
    valid: Tensor | None = None,
) -> Tensor:
    """Fit a per-frame scale and shift that brings every frame's depth to a reference frame's.

    Relative depth models are right up to an affine map of *disparity* per frame, and that map
    drifts from frame to frame (flicker). This fits ``s_t * x_t + b_t ~ x_ref`` per frame, with
    ``x = 1 / depth`` (``space="disparity"``) or ``x = depth``, and returns the mapped depth.

    * ``method="stats"`` matches the median and the median absolute deviation (robust, needs no
      pixel correspondence, so camera and object motion do not bias it);
    * ``method="lstsq"`` fits pixel to pixel by least squares with one trimmed refit (the best
      choice for a static or slowly moving camera).

    Args:
        depth: planar depth ``(T, 1, H, W)``, > 0.
        reference: index of the frame the others are aligned to (it is returned unchanged).
        space: fit in ``"disparity"`` (default; affine-invariant models) or ``"depth"``.
        method: ``"stats"`` or ``"lstsq"``.
        valid: optional mask ``(T, 1, H, W)`` of pixels to use for the fit.

    Returns:
        aligned depth ``(T, 1, H, W)``, > 0 (values an affine map would push to <= 0 are
        clamped to the smallest positive value of the reference frame).
    """
    check_video(depth, "align_depth_scales: depth", channels=1)
    num = depth.shape[0]
    if not -num <= reference < num:
        raise RecaptureError(f"align_depth_scales: reference={reference} is outside the {num} frames")
    reference %= num
    x_all = 1.0 / depth if space == "disparity" else depth
    ok = torch.ones_like(depth, dtype=torch.bool) if valid is None else valid.bool()
    ref_full = x_all[reference, 0]
    out = x_all.clone()
    floor = ref_full[ok[reference, 0]].min()
    fit = _fit_stats if method == "stats" else _fit_lstsq
    for t in range(num):
        if t == reference:
            continue
        if method == "stats":
            scale, shift = fit(x_all[t, 0][ok[t, 0]], ref_full[ok[reference, 0]])
        else:
            both = ok[t, 0] & ok[reference, 0]
            scale, shift = fit(x_all[t, 0][both], ref_full[both])
        if not bool(scale > 0):
            log.warning("align_depth_scales: frame %d fit a non-positive scale; left unaligned", t)
            continue
        out[t] = (scale * x_all[t] + shift).clamp_min(floor)
    return 1.0 / out if space == "disparity" else out
