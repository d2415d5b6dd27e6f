"""Kubric-4D camera conventions: Blender metadata -> OpenCV poses, pixel intrinsics, depth conversion.

Kubric (and so GCD's Kubric-4D) stores per view and frame a camera **position** and a Blender
**quaternion** ``(w, x, y, z)``; together they are a camera-to-world pose whose camera looks down
its -z axis with +y up (OpenGL/Blender). ``camera.K`` is normalised to a unit image with Blender
signs, ``[[f/sw, 0, -0.5], [0, -f/sh, -0.5], [0, 0, -1]]`` (``sw``/``sh`` sensor width/height).
Depth is the **Euclidean distance** to the camera centre, not planar z.

Conversions (benchmarks spec 1.3): OpenCV c2w = ``[R(q) | p]`` with columns 1 and 2 negated;
pixel ``K = abs(K_norm)`` with row 0 times W and row 1 times H (576x384: fx = fy = 576, cx = 288,
cy = 192). The world is Z-up with the ground at z = 0; the 16 dataset cameras look at (0, 0, 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from recapture.cameras import opencv_to_opengl, opengl_to_opencv, spherical_to_c2w
from recapture.cameras.poses import make_pose, matrix_to_quaternion, quaternion_to_matrix
from recapture.utils import RecaptureError

__all__ = [
    "DATASET_FPS",
    "DATASET_NUM_FRAMES",
    "DATASET_RESOLUTION",
    "INPUT_VIEW",
    "LOOK_AT",
    "NUM_VIEWS",
    "DepthConversion",
    "distance_to_planar",
    "kubric_intrinsics",
    "kubric_to_opencv_c2w",
    "normalised_kubric_K",
    "opencv_c2w_to_kubric",
    "planar_to_distance",
    "spherical_pose",
    "view_spherical",
]

NUM_VIEWS = 16
INPUT_VIEW = 4  # GCD's evaluation input camera: azimuth 15, elevation 5, radius 15
LOOK_AT = (0.0, 0.0, 1.0)
VIEW_RADIUS = 15.0
DATASET_RESOLUTION = (384, 576)  # (H, W)
DATASET_NUM_FRAMES = 60
DATASET_FPS = 24
FOCAL_LENGTH_MM = 32.0
SENSOR_WIDTH_MM = 32.0

DepthConversion = Literal["exact", "gcd"]


def view_spherical(view: int) -> tuple[float, float, float]:
    """``(azimuth_deg, elevation_deg, radius)`` of one of the 16 static Kubric-4D cameras (spec 1.4).

    Views 0-3: elevation 45, azimuth 0/90/180/270. Views 4-15: elevation 5, azimuth
    ``(v - 4 + 0.5) * 30`` = 15, 45, ..., 345. All at radius 15 around (0, 0, 1).
    """
    if isinstance(view, bool) or not isinstance(view, int) or not 0 <= view < NUM_VIEWS:
        raise RecaptureError(f"view={view!r} is not a Kubric-4D camera; use an integer in 0..{NUM_VIEWS - 1}")
    if view < 4:
        return view * 90.0, 45.0, VIEW_RADIUS
    return (view - 4 + 0.5) * 30.0, 5.0, VIEW_RADIUS


def spherical_pose(
    azimuth_deg: Tensor | float, elevation_deg: Tensor | float, radius: Tensor | float
) -> Tensor:
    """GCD look-at poses on a sphere around (0, 0, 1) (spec 1.5), OpenCV camera-to-world.

    Position = ``radius (cos el cos az, cos el sin az, sin el) + (0, 0, 1)``; forward towards
    (0, 0, 1); right = ``normalise(cross((0, 0, -1), forward))``; down = ``cross(forward, right)``.

    Args:
        azimuth_deg: scalar or ``(N,)`` degrees.
        elevation_deg: scalar or ``(N,)`` degrees in (-90, 90).
        radius: scalar or ``(N,)`` metres, > 0.

    Returns:
        ``(..., 4, 4)`` float32 OpenCV c2w (batch shape broadcast from the inputs).
    """
    # recapture.cameras.spherical_to_c2w builds exactly this frame (right = forward x up(0,0,1))
    return spherical_to_c2w(azimuth_deg, elevation_deg, radius, target=LOOK_AT)


def kubric_to_opencv_c2w(positions: Tensor, quaternions: Tensor) -> Tensor:
    """Kubric camera positions and Blender quaternions to OpenCV camera-to-world poses.

    Args:
        positions: ``(..., 3)`` camera centres in world metres.
        quaternions: ``(..., 4)`` Blender rotations ``(w, x, y, z)`` (camera looks down -z, +y up).

    Returns:
        ``(..., 4, 4)`` OpenCV c2w (x right, y down, z forward), dtype of ``positions``.
    """
    if positions.shape[-1:] != (3,) or quaternions.shape[-1:] != (4,):
        raise RecaptureError(
            f"positions must be (..., 3) and quaternions (..., 4), got {tuple(positions.shape)} and "
            f"{tuple(quaternions.shape)}"
        )
    rotation = quaternion_to_matrix(quaternions.to(positions.dtype))
    return opengl_to_opencv(make_pose(rotation, positions))


def opencv_c2w_to_kubric(c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`kubric_to_opencv_c2w`: OpenCV c2w to Kubric ``(positions, quaternions)``.

    Args:
        c2w: ``(..., 4, 4)`` OpenCV camera-to-world.

    Returns:
        ``positions (..., 3)`` and Blender quaternions ``(..., 4)`` ``(w, x, y, z)`` with ``w >= 0``.
    """
    blender = opencv_to_opengl(c2w)
    return blender[..., :3, 3], matrix_to_quaternion(blender[..., :3, :3])


def normalised_kubric_K(
    height: int, width: int, focal_length: float = FOCAL_LENGTH_MM, sensor_width: float = SENSOR_WIDTH_MM
) -> Tensor:
    """Kubric's normalised intrinsics with Blender signs for an ``height x width`` render.

    Returns:
        ``(3, 3)`` float64 ``[[f/sw, 0, -0.5], [0, -f/sh, -0.5], [0, 0, -1]]`` with sensor height
        ``sh = sw * H / W`` (Kubric fits the sensor width); 576x384: ``fy = -1.5``.
    """
    sensor_height = sensor_width * height / width
    return torch.tensor(
        [
            [focal_length / sensor_width, 0.0, -0.5],
            [0.0, -focal_length / sensor_height, -0.5],
            [0.0, 0.0, -1.0],
        ],
        dtype=torch.float64,
    )


def kubric_intrinsics(K_normalised: Tensor, height: int, width: int) -> Tensor:
    """Pixel intrinsics from Kubric's normalised, Blender-signed ``camera.K`` (GCD's conversion).

    ``abs(K)``, row 0 times ``width``, row 1 times ``height``. A pixel ``(u, v)`` (integer indices)
    then has its centre at ``(u + 0.5, v + 0.5)`` (recapture's convention).

    Args:
        K_normalised: ``(..., 3, 3)`` as stored in the metadata JSON.
        height: image height ``H`` in pixels.
        width: image width ``W`` in pixels.

    Returns:
        ``(..., 3, 3)`` ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
    """
    if K_normalised.shape[-2:] != (3, 3):
        raise RecaptureError(f"camera.K must be (3, 3), got {tuple(K_normalised.shape)}")
    K = K_normalised.abs().clone()
    K[..., 0, :] *= width
    K[..., 1, :] *= height
    return K


def _ray_norm(height: int, width: int, K: Tensor, method: DepthConversion) -> Tensor:
    """``|K^-1 (u, v, 1)|`` per pixel, ``(H, W)``: Euclidean distance / planar depth."""
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    dtype = K.dtype if K.is_floating_point() else torch.float32
    if method == "exact":
        tx = (torch.arange(width, dtype=torch.float64) + 0.5 - cx) / fx
        ty = (torch.arange(height, dtype=torch.float64) + 0.5 - cy) / fy
    elif method == "gcd":
        # GCD's approximation: linearly spaced angles over the field of view, ends at the borders
        fov_x = 2.0 * math.atan(width / (2.0 * abs(fx)))
        fov_y = 2.0 * math.atan(height / (2.0 * abs(fy)))
        tx = torch.tan(torch.linspace(-fov_x / 2.0, fov_x / 2.0, width, dtype=torch.float64))
        ty = torch.tan(torch.linspace(-fov_y / 2.0, fov_y / 2.0, height, dtype=torch.float64))
    else:
        raise RecaptureError(f"depth conversion {method!r} is unknown; use 'exact' or 'gcd'")
    return torch.sqrt(1.0 + tx[None, :] ** 2 + ty[:, None] ** 2).to(dtype)


def distance_to_planar(distance: Tensor, K: Tensor, method: DepthConversion = "exact") -> Tensor:
    """Euclidean distance to the camera centre -> planar depth z.

    ``exact`` (default): ``z = d / sqrt(1 + ((u+0.5-cx)/fx)^2 + ((v+0.5-cy)/fy)^2)`` (spec 1.3; with
    Kubric's K, ``cx = W/2``). ``gcd``: GCD's approximation with linearly spaced angles
    (``tan(linspace(-fov/2, fov/2, W))``), for exact parity with its point clouds.

    Args:
        distance: ``(..., H, W)`` distances (e.g. ``(T, 1, H, W)``).
        K: ``(3, 3)`` pixel intrinsics of that image.
        method: ``"exact"`` or ``"gcd"``.

    Returns:
        ``(..., H, W)`` planar depth, same dtype as ``distance``.
    """
    height, width = distance.shape[-2:]
    return distance / _ray_norm(height, width, K, method).to(distance.dtype)


def planar_to_distance(depth: Tensor, K: Tensor, method: DepthConversion = "exact") -> Tensor:
    """Inverse of :func:`distance_to_planar`: planar depth ``(..., H, W)`` -> Euclidean distance."""
    height, width = depth.shape[-2:]
    return depth * _ray_norm(height, width, K, method).to(depth.dtype)
