"""Point clouds from RGB-D frames, rigid pose helpers, and neighbour-frame fusion."""

from __future__ import annotations

import torch
from kornia.geometry.camera import project_points
from kornia.geometry.depth import depth_to_3d_v2, unproject_meshgrid
from kornia.geometry.linalg import transform_points
from torch import Tensor

__all__ = [
    "depth_to_points",
    "depth_to_points_frames",
    "invert_rigid",
    "neighbor_points",
    "pixel_rays",
    "transform",
    "transform_frames",
]


def pixel_rays(K: Tensor, size: tuple[int, int], dtype: torch.dtype | None = None) -> Tensor:
    """The ray through every pixel at depth 1 (kornia ``unproject_meshgrid``), to reuse across frames.

    Args:
        K: intrinsics ``(3, 3)``.
        size: ``(H, W)``.
        dtype: result dtype (default K's).

    Returns:
        ``(1, H, W, 3)``.
    """
    return unproject_meshgrid(*size, K[None], device=K.device, dtype=dtype or K.dtype)


def depth_to_points(depth: Tensor, K: Tensor, rays: Tensor | None = None) -> Tensor:
    """Lift a planar depth map to camera-frame points (kornia ``depth_to_3d_v2``).

    Args:
        depth: ``(1, H, W)`` or ``(H, W)`` planar depth.
        K: intrinsics ``(3, 3)``.
        rays: optional :func:`pixel_rays` for this K and size (skips rebuilding the grid).

    Returns:
        points ``(H W, 3)`` in row-major pixel order, ``((u - cx) z / fx, (v - cy) z / fy, z)``.
    """
    d = depth.reshape(1, *depth.shape[-2:])
    return depth_to_3d_v2(d, K[None].to(d.dtype), xyz_grid=rays).reshape(-1, 3)


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def depth_to_points_frames(depth: Tensor, rays: Tensor) -> Tensor:
    """Lift every frame at once to homogeneous camera-frame points (``w = 1``), for :func:`transform_frames`.

    The xyz part is bit-for-bit :func:`depth_to_points` of each frame; written straight into the
    homogeneous layout (no concatenation) when no gradient is needed.

    Args:
        depth: planar depth ``(T, 1, H, W)``.
        rays: :func:`pixel_rays` ``(1, H, W, 3)`` shared by all frames, or ``(T, H, W, 3)``.

    Returns:
        ``(T, H W, 4)``, rows ``((u - cx) z / fx, (v - cy) z / fy, z, 1)`` in row-major pixel order.
    """
    t, hw = depth.shape[0], depth.shape[-2] * depth.shape[-1]
    rays, z = rays.reshape(-1, hw, 3), depth.reshape(t, hw, 1)
    if _needs_grad(depth, rays):
        return torch.cat([rays * z, torch.ones_like(z)], -1)
    out = torch.empty(t, hw, 4, dtype=torch.promote_types(rays.dtype, z.dtype), device=depth.device)
    out[..., 3] = 1
    torch.mul(rays, z, out=out[..., :3])
    return out


def transform_frames(poses: Tensor, points_h: Tensor) -> Tensor:
    """Apply one rigid transform per frame to homogeneous points: :func:`transform`, frame by frame.

    Each frame is the same ``(1, N, 4) x (1, 4, 4)^T`` matrix product kornia's ``transform_points``
    computes, hence bit-for-bit its result: for a rigid pose (last row exactly ``0 0 0 1``, as
    :func:`invert_rigid` builds) ``w`` is exactly 1 and kornia's division by it changes nothing.

    Args:
        poses: rigid transforms ``(T, 4, 4)``.
        points_h: homogeneous points ``(T, N, 4)`` with ``w = 1`` (:func:`depth_to_points_frames`).

    Returns:
        transformed points ``(T, N, 3)`` (a view into a ``(T, N, 4)`` buffer).
    """
    poses_t = poses.to(points_h.dtype).transpose(1, 2)
    if _needs_grad(poses, points_h):
        out = torch.cat([torch.bmm(points_h[t : t + 1], poses_t[t : t + 1]) for t in range(len(poses))])
    else:
        out = torch.empty_like(points_h)
        for t in range(len(poses)):  # per frame, exactly kornia's call (a batched bmm may round differently)
            torch.bmm(points_h[t : t + 1], poses_t[t : t + 1], out=out[t : t + 1])
    return out[..., :3]


def invert_rigid(pose: Tensor) -> Tensor:
    """Invert rigid transforms in closed form (``R^T``, ``-R^T t``); differentiable.

    Args:
        pose: ``(*, 4, 4)``.

    Returns:
        the inverse, ``(*, 4, 4)``.
    """
    rot_t = pose[..., :3, :3].transpose(-1, -2)
    trans = -(rot_t @ pose[..., :3, 3:])
    top = torch.cat([rot_t, trans], -1)
    bottom = torch.zeros_like(pose[..., 3:, :])
    bottom[..., 3] = 1
    return torch.cat([top, bottom], -2)


def transform(pose: Tensor, points: Tensor) -> Tensor:
    """Apply a ``(4, 4)`` transform to points ``(N, 3)`` (kornia ``transform_points``)."""
    return transform_points(pose[None].to(points.dtype), points[None])[0]


def neighbor_points(
    frames: Tensor,
    depth: Tensor,
    K: Tensor,
    t: int,
    radius: int,
    source_c2w: Tensor | None = None,
    valid: Tensor | None = None,
    depth_tol: float = 0.05,
    near: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Points of frames ``t - radius .. t + radius`` that fill frame ``t``'s disocclusions.

    Each neighbour's points are moved into frame ``t``'s source camera and tested against frame
    ``t``'s own depth at the pixel they land in. A static scene predicts one of two outcomes, and
    those points are kept:

    * *occluded*: the point is more than ``depth_tol`` (relative) behind frame ``t``'s surface
      there: static background that frame ``t`` cannot see (exactly what a camera move reveals);
    * *outside*: it lands outside frame ``t``'s image (a moving source camera saw more).

    A point *in front of* frame ``t``'s visible surface contradicts what frame ``t`` sees (free
    space): it moved (a dynamic object) or its depth is wrong, so it is dropped. Points on frame
    ``t``'s own surface add nothing and are dropped too.

    Args:
        frames: ``(T, C, H, W)``.
        depth: planar depth ``(T, 1, H, W)``.
        K: intrinsics ``(T, 3, 3)``.
        t: the frame being filled.
        radius: how many frames on each side to use.
        source_c2w: source camera poses ``(T, 4, 4)`` in a common world frame; ``None`` means a
            static source camera (all identity).
        valid: optional ``(T, 1, H, W)``; pixels where it is 0 contribute no point.
        depth_tol: relative depth tolerance of the occlusion test.
        near: points at ``z <= near`` are dropped.

    Returns:
        ``(points (M, 3), colors (M, C))`` in frame ``t``'s source camera.
    """
    num, c, h, w = frames.shape
    z_t = depth[t, 0].reshape(-1)
    pts_out, col_out = [], []
    for s in range(max(0, t - radius), min(num, t + radius + 1)):
        if s == t:
            continue
        pts = depth_to_points(depth[s], K[s])
        col = frames[s].reshape(c, -1).T
        if valid is not None:
            keep = valid[s].reshape(-1) > 0
            pts, col = pts[keep], col[keep]
        if source_c2w is not None:
            pts = transform(invert_rigid(source_c2w[t]) @ source_c2w[s], pts)
        z = pts[:, 2]
        front = z > near
        pts, col, z = pts[front], col[front], z[front]
        uv = project_points(pts[None], K[t][None].to(pts.dtype))[0]
        ui = torch.floor(uv[:, 0] + 0.5).long()
        vi = torch.floor(uv[:, 1] + 0.5).long()
        inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
        surface = torch.zeros_like(z)
        surface[inside] = z_t[vi[inside] * w + ui[inside]].to(z.dtype)
        occluded = inside & (z > surface * (1 + depth_tol))
        if valid is not None:  # no depth for frame t there: nothing to contradict
            unknown = torch.zeros_like(inside)
            unknown[inside] = valid[t, 0].reshape(-1)[vi[inside] * w + ui[inside]] == 0
            occluded = occluded | unknown
        keep = occluded | ~inside
        pts_out.append(pts[keep])
        col_out.append(col[keep])
    if not pts_out:
        return depth.new_zeros(0, 3), frames.new_zeros(0, c)
    return torch.cat(pts_out), torch.cat(col_out)
