"""Per-view point clouds of a Kubric-4D scene and their GCD renders (used by the protocol).

* :func:`view_point_cloud`: one view's pixels unprojected with its GT depth into world points.
* :func:`render_video_frame`: GCD's soft splat at render size, ``blur_into_black`` and a bilinear
  resize (align_corners=False, no antialias) to the output size; optionally a depth channel.
* :func:`render_intrinsics` / :func:`output_intrinsics`: K of the render and of the resized output.
* :func:`resample_depth`: a GT depth map sampled at another K's pixel centres (same camera).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recapture.data.kubric.geometry import DepthConversion, distance_to_planar
from recapture.data.kubric.reader import KubricScene
from recapture.data.kubric.splat import (
    PixelGrid,
    blur_into_black,
    gaussian_blur,
    gcd_soft_splat,
    pixel_offset,
)

__all__ = [
    "output_intrinsics",
    "render_intrinsics",
    "render_video_frame",
    "resample_depth",
    "view_point_cloud",
]


def render_intrinsics(scene: KubricScene, view: int, render_size: tuple[int, int]) -> Tensor:
    """Pixel ``K`` ``(3, 3)`` float64 of the point-cloud render (GCD's aspect handling).

    The view's normalised ``K`` scaled to ``render_size`` ``(H, W)``; if the render's aspect differs
    from the dataset's, the focal lengths are made equal (a centre crop, as GCD does).
    """
    K = scene.intrinsics(view, render_size).clone()
    data_aspect = scene.size[1] / scene.size[0]
    aspect = render_size[1] / render_size[0]
    if aspect > data_aspect + 1e-3:
        K[1, 1] = K[0, 0]
    elif aspect < data_aspect - 1e-3:
        K[0, 0] = K[1, 1]
    return K


def output_intrinsics(
    K_render: Tensor, render_size: tuple[int, int], size: tuple[int, int], grid: PixelGrid
) -> Tensor:
    """``K`` ``(3, 3)`` of the render resized to ``size`` ``(H, W)``, pixel centres at +0.5.

    Exact for align_corners=False resizing. With the ``"gcd"`` grid the render's pixel centres sit
    at integer K coordinates, i.e. half a render pixel left/up of recapture's convention.
    """
    shift = 0.5 - pixel_offset(grid)
    K = K_render.clone()
    sx, sy = size[1] / render_size[1], size[0] / render_size[0]
    K[0, 0], K[0, 2] = K[0, 0] * sx, (K[0, 2] + shift) * sx
    K[1, 1], K[1, 2] = K[1, 1] * sy, (K[1, 2] + shift) * sy
    return K


def view_point_cloud(
    scene: KubricScene,
    view: int,
    frame: int,
    depth_conversion: DepthConversion = "exact",
    pixel_grid: PixelGrid = "centre",
    quantize: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """All pixels of one view and frame lifted to world points with the GT depth.

    Args:
        scene: the scene.
        view: camera index.
        frame: dataset frame.
        depth_conversion: Euclidean -> planar: ``"exact"`` or ``"gcd"``.
        pixel_grid: ``"centre"`` (rays through ``u + 0.5``) or ``"gcd"`` (through ``u``).
        quantize: round points to float16 and colours to uint8 (GCD's point-cloud cache).
        device: where to return the cloud.

    Returns:
        ``points`` ``(H*W, 3)`` float64 (world) and ``colours`` ``(H*W, 3)`` float32 in [0, 1].
    """
    rgb = scene.read_rgb(view, frame)[0]
    K = scene.intrinsics(view)
    depth = distance_to_planar(scene.read_distance(view, frame)[0, 0].double(), K, depth_conversion)
    height, width = depth.shape
    off = pixel_offset(pixel_grid)
    x = ((torch.arange(width, dtype=torch.float64) + off - K[0, 2]) / K[0, 0])[None, :].expand(height, -1)
    y = ((torch.arange(height, dtype=torch.float64) + off - K[1, 2]) / K[1, 1])[:, None].expand(-1, width)
    cam = torch.stack([x, y, torch.ones_like(x)], -1) * depth[..., None]
    c2w = scene.c2w(view)[frame]
    points = cam.reshape(-1, 3) @ c2w[:3, :3].T + c2w[:3, 3]
    colours = rgb.permute(1, 2, 0).reshape(-1, 3)
    if quantize:
        points = points.to(torch.float16).to(torch.float64)
        colours = (colours * 255.0).to(torch.uint8).to(torch.float32) / 255.0
    return points.to(device), colours.to(device)


def _resize(image: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    kwargs = {"align_corners": False, "antialias": False} if mode == "bilinear" else {}
    return F.interpolate(image[None], size=size, mode=mode, **kwargs)[0]


def _fill_depth_holes(z: Tensor, kernel: int) -> Tensor:
    """Replace zeros of a depth render ``(1, H, W)`` by a mask-normalised Gaussian of the rest."""
    hole = z <= 0
    if not bool(hole.any()) or bool(hole.all()):
        return z
    sigma = kernel / 4.0
    fill = gaussian_blur(z, kernel, sigma) / gaussian_blur((~hole).to(z.dtype), kernel, sigma).clamp_min(1e-7)
    return torch.where(hole, fill, z)


def render_video_frame(
    points: Tensor,
    colours: Tensor,
    c2w: Tensor,
    K: Tensor,
    render_size: tuple[int, int],
    size: tuple[int, int],
    blur_kernel: int,
    neighbour_weight: float = 0.02,
    near: float = 0.1,
    pixel_grid: PixelGrid = "centre",
    with_depth: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """One GCD frame: soft splat at ``render_size``, ``blur_into_black(blur_kernel)``, bilinear resize.

    Args:
        points: ``(N, 3)`` world points.
        colours: ``(N, 3)`` in [0, 1].
        c2w: ``(4, 4)`` OpenCV camera-to-world.
        K: ``(3, 3)`` intrinsics at ``render_size``.
        render_size: ``(H, W)`` of the splat.
        size: ``(H, W)`` of the output.
        blur_kernel: hole-filling kernel (sigma = kernel / 4).
        neighbour_weight: splat footprint weight.
        near: near plane.
        pixel_grid: ``"centre"`` or ``"gcd"``.
        with_depth: also return the weighted mean depth (holes filled, nearest resize).

    Returns:
        ``rgb`` ``(3, H, W)`` float32 in [0, 1] and ``depth`` ``(1, H, W)`` float32 or None.
    """
    image, _ = gcd_soft_splat(
        points, colours, c2w, K, render_size, neighbour_weight, near, pixel_grid, return_depth=with_depth
    )
    rgb = blur_into_black(image[:3].clamp(0.0, 1.0), blur_kernel, blur_kernel / 4.0)
    rgb = _resize(rgb, size).clamp(0.0, 1.0).float()
    if not with_depth:
        return rgb, None
    return rgb, _resize(_fill_depth_holes(image[3:4], blur_kernel), size, "nearest-exact").float()


def resample_depth(depth: Tensor, K_src: Tensor, K_out: Tensor, size: tuple[int, int]) -> Tensor:
    """Sample planar depth ``(N, 1, h, w)`` (intrinsics ``K_src``) at the pixel centres of ``K_out``.

    Same camera, other intrinsics/size. Bilinear on smooth surfaces; nearest where bilinear mixes
    surfaces (it differs from nearest by more than 2%).

    Returns:
        ``(N, 1, H, W)`` with ``(H, W) = size``.
    """
    height, width = size
    h, w = depth.shape[-2:]
    K_src, K_out = K_src.double(), K_out.double()
    cols = torch.arange(width, dtype=torch.float64) + 0.5
    rows = torch.arange(height, dtype=torch.float64) + 0.5
    u = (cols - K_out[0, 2]) / K_out[0, 0] * K_src[0, 0] + K_src[0, 2]  # continuous source columns
    v = (rows - K_out[1, 2]) / K_out[1, 1] * K_src[1, 1] + K_src[1, 2]
    gx = (u / w * 2 - 1)[None, :].expand(height, -1)
    gy = (v / h * 2 - 1)[:, None].expand(-1, width)
    grid = torch.stack([gx, gy], -1)[None].expand(depth.shape[0], -1, -1, -1).to(depth.dtype)
    near = F.grid_sample(depth, grid, mode="nearest", padding_mode="border", align_corners=False)
    lin = F.grid_sample(depth, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where((lin - near).abs() <= 0.02 * near, lin, near)
