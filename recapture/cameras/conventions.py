"""Camera conventions: OpenCV <-> OpenGL/Blender, c2w <-> w2c, intrinsics, look-at, spherical poses.

The one convention of ``recapture``: a pose is a ``(..., 4, 4)`` **camera-to-world** matrix whose
rotation columns are the camera's axes in world coordinates with **OpenCV** axes: x right, y down,
z forward (the optical axis). A pixel ``(u, v)`` (column, row; pixel centres at ``+0.5``) sees the
camera-space ray ``K^-1 [u, v, 1]``; ``K`` is ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.

=====================  ==========================  =======================================
convention             camera axes (x, y, z)       used by
=====================  ==========================  =======================================
OpenCV (ours)          right, down, forward        COLMAP, recapture, GCD after conversion
OpenGL / Blender       right, up, backward         nerfstudio/NeRF ``transforms.json``, Kubric
=====================  ==========================  =======================================

Converting between the two flips the camera's y and z axes (right-multiplying by
``diag(1, -1, -1, 1)``); it does not touch the world frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from recapture.cameras.poses import check_poses, invert_pose, make_pose
from recapture.utils import RecaptureError

__all__ = [
    "c2w_to_w2c",
    "fov_from_intrinsics",
    "intrinsics_from_fov",
    "look_at",
    "opencv_to_opengl",
    "opengl_to_opencv",
    "spherical_to_c2w",
    "w2c_to_c2w",
]

FovAxis = Literal["horizontal", "vertical", "diagonal"]
_FLIP_YZ = (1.0, -1.0, -1.0, 1.0)


def opencv_to_opengl(c2w: Tensor) -> Tensor:
    """Convert OpenCV camera-to-world poses to OpenGL/Blender ones (flip the camera's y and z axes).

    Args:
        c2w: ``(..., 4, 4)`` camera-to-world, camera axes x right, y down, z forward.

    Returns:
        ``(..., 4, 4)`` camera-to-world, camera axes x right, y up, z backward. Same camera centre.
    """
    check_poses(c2w, "c2w")
    return c2w * c2w.new_tensor(_FLIP_YZ)


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Convert OpenGL/Blender camera-to-world poses to OpenCV ones (the flip is its own inverse).

    Args:
        c2w: ``(..., 4, 4)`` camera-to-world, camera axes x right, y up, z backward.

    Returns:
        ``(..., 4, 4)`` camera-to-world, camera axes x right, y down, z forward.
    """
    check_poses(c2w, "c2w")
    return c2w * c2w.new_tensor(_FLIP_YZ)


def c2w_to_w2c(c2w: Tensor) -> Tensor:
    """Invert camera-to-world poses into world-to-camera (extrinsic) matrices.

    Args:
        c2w: ``(..., 4, 4)`` rigid camera-to-world poses.

    Returns:
        ``(..., 4, 4)`` world-to-camera: ``x_cam = w2c @ x_world``.
    """
    return invert_pose(c2w)


def w2c_to_c2w(w2c: Tensor) -> Tensor:
    """Invert world-to-camera (extrinsic) matrices into camera-to-world poses.

    Args:
        w2c: ``(..., 4, 4)`` rigid world-to-camera matrices.

    Returns:
        ``(..., 4, 4)`` camera-to-world poses.
    """
    return invert_pose(w2c)


def _fov_extent(height: int, width: int, axis: str) -> float:
    if height <= 0 or width <= 0:
        raise RecaptureError(f"image size must be positive, got height={height}, width={width}.")
    if axis == "horizontal":
        return float(width)
    if axis == "vertical":
        return float(height)
    if axis == "diagonal":
        return math.hypot(width, height)
    raise RecaptureError(f"fov axis must be 'horizontal', 'vertical' or 'diagonal', got {axis!r}.")


def intrinsics_from_fov(fov_deg: float, height: int, width: int, axis: FovAxis = "horizontal") -> Tensor:
    """Pinhole intrinsics with square pixels and the principal point at the image centre.

    Args:
        fov_deg: field of view in degrees, in (0, 180), measured along ``axis``.
        height: image height in pixels.
        width: image width in pixels.
        axis: which extent the field of view spans: ``"horizontal"`` (width), ``"vertical"``
            (height) or ``"diagonal"``.

    Returns:
        ``(3, 3)`` float32 ``K`` with ``fx = fy = extent / (2 tan(fov / 2))``, ``cx = W / 2``,
        ``cy = H / 2``.

    Example:
        >>> intrinsics_from_fov(90.0, 256, 384)[0, 0]
        tensor(192.)
    """
    if not 0.0 < float(fov_deg) < 180.0:
        raise RecaptureError(f"fov_deg must be in (0, 180) degrees, got {fov_deg}.")
    extent = _fov_extent(height, width, axis)
    focal = extent / (2.0 * math.tan(math.radians(float(fov_deg)) / 2.0))
    return torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def fov_from_intrinsics(K: Tensor, height: int, width: int, axis: FovAxis = "horizontal") -> float:
    """Field of view in degrees of pinhole intrinsics (inverse of :func:`intrinsics_from_fov`).

    Args:
        K: ``(3, 3)`` intrinsics in pixels.
        height: image height in pixels.
        width: image width in pixels.
        axis: ``"horizontal"`` (uses fx), ``"vertical"`` (fy) or ``"diagonal"`` (mean focal).

    Returns:
        The field of view in degrees.
    """
    if not isinstance(K, Tensor) or tuple(K.shape) != (3, 3):
        raise RecaptureError(f"K must be a (3, 3) tensor, got {getattr(K, 'shape', type(K).__name__)}.")
    fx, fy = float(K[0, 0]), float(K[1, 1])
    focal = {"horizontal": fx, "vertical": fy}.get(axis, math.sqrt(abs(fx * fy)))
    if focal <= 0:
        raise RecaptureError(f"K has a non-positive focal length (fx={fx}, fy={fy}).")
    return math.degrees(2.0 * math.atan(_fov_extent(height, width, axis) / (2.0 * focal)))


def _vec3(value: Tensor | Sequence[float], name: str, like: Tensor | None = None) -> Tensor:
    t = torch.as_tensor(value, dtype=like.dtype if like is not None else None)
    if not t.is_floating_point():
        t = t.float()
    if t.shape[-1:] != (3,):
        raise RecaptureError(f"{name} must have shape (..., 3), got {tuple(t.shape)}.")
    return t


def look_at(
    eye: Tensor | Sequence[float],
    target: Tensor | Sequence[float],
    up: Tensor | Sequence[float] = (0.0, -1.0, 0.0),
) -> Tensor:
    """OpenCV camera-to-world poses at ``eye`` whose optical axis points at ``target``.

    Args:
        eye: ``(..., 3)`` camera centres.
        target: ``(..., 3)`` points to look at.
        up: ``(..., 3)`` world direction that should appear up in the image. The default
            ``(0, -1, 0)`` is "up" in OpenCV camera coordinates, i.e. in the frame of a source
            camera; use ``(0, 0, 1)`` for Z-up worlds such as Kubric's.

    Returns:
        ``(..., 4, 4)`` with columns ``right = normalise(forward x up)``,
        ``down = forward x right``, ``forward = normalise(target - eye)``.
    """
    eye = _vec3(eye, "eye")
    target = _vec3(target, "target", eye)
    up = _vec3(up, "up", eye)
    forward = target - eye
    norm = forward.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-12).any()):
        raise RecaptureError("look_at: eye and target coincide; move the target away from the camera.")
    forward = forward / norm
    right = torch.linalg.cross(forward, up.expand_as(forward), dim=-1)
    rnorm = right.norm(dim=-1, keepdim=True)
    if bool((rnorm < 1e-8).any()):
        raise RecaptureError(
            f"look_at: the viewing direction is parallel to up={up.tolist()}; pass another up vector."
        )
    right = right / rnorm
    down = torch.linalg.cross(forward, right, dim=-1)
    return make_pose(torch.stack([right, down, forward], dim=-1), eye)


def spherical_to_c2w(
    azimuth_deg: Tensor | float,
    elevation_deg: Tensor | float,
    radius: Tensor | float,
    target: Tensor | Sequence[float] = (0.0, 0.0, 0.0),
) -> Tensor:
    """Cameras on a sphere around ``target`` looking at it, in a Z-up world (Kubric / GCD).

    Position = ``target + radius * (cos(el) cos(az), cos(el) sin(az), sin(el))``; the camera looks
    at ``target`` with world +z up in the image. Azimuth is counter-clockwise seen from +z.

    Args:
        azimuth_deg: scalar or ``(...)`` degrees.
        elevation_deg: scalar or ``(...)`` degrees, in (-90, 90).
        radius: scalar or ``(...)`` distance to ``target`` (> 0).
        target: ``(3,)`` look-at point, e.g. ``(0, 0, 1)`` for Kubric-4D.

    Returns:
        ``(..., 4, 4)`` OpenCV camera-to-world poses (batch shape broadcast from the inputs).
    """
    az, el, r = (torch.as_tensor(v, dtype=torch.float64) for v in (azimuth_deg, elevation_deg, radius))
    if bool((r <= 0).any()):
        raise RecaptureError(f"radius must be positive, got {r.tolist()}.")
    if bool((el.abs() >= 90).any()):
        raise RecaptureError(f"elevation_deg must be in (-90, 90) (the poles have no 'up'), got {el.tolist()}.")
    az, el, r = torch.broadcast_tensors(torch.deg2rad(az), torch.deg2rad(el), r)
    tgt = torch.as_tensor(target, dtype=torch.float64)
    eye = tgt + r[..., None] * torch.stack(
        [torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)], dim=-1
    )
    return look_at(eye, tgt.expand_as(eye), (0.0, 0.0, 1.0)).float()
