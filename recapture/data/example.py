"""A generated example clip (no downloads): a small ray-cast scene with two moving spheres.

The scene, in the camera frame of a static camera at the origin (OpenCV axes: x right, y down,
z forward; camera-to-world pose = identity; 60 degree horizontal field of view):

* ground plane ``y = GROUND_Y`` (1.2 below the camera): checkerboard of 0.5 m tiles, tinted warm
  on the left to cool on the right;
* back wall ``z = WALL_Z`` (10): bricks with mortar lines, darker towards the top;
* a large sphere rolling left to right on the ground at ``z = 4`` (its texture turns as it rolls)
  and a smaller one bouncing right to left behind it at ``z = 5.3``, so the near sphere occludes
  the far one around the middle of the clip;
* Lambertian shading from a directional light with hard shadows cast by the spheres,
  2x2 supersampled colour.

Depth is the exact planar z of the surface seen through each pixel centre (no supersampling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recapture.io.video import Video
from recapture.utils import RecaptureError

GROUND_Y = 1.2
WALL_Z = 10.0
HFOV_DEG = 60.0
_LIGHT = F.normalize(torch.tensor([-0.45, -1.0, -0.55]), dim=0)  # unit vector towards the light
_AMBIENT, _DIFFUSE = 0.32, 0.78


def example_intrinsics(height: int, width: int) -> torch.Tensor:
    """Pinhole ``K`` ``(3, 3)`` in pixels: 60 deg horizontal FOV, square pixels, centre ``(W/2, H/2)``.

    Pixel ``(u, v)`` (integer indices) has its centre at ``(u + 0.5, v + 0.5)``.
    """
    f = (width / 2) / math.tan(math.radians(HFOV_DEG) / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def _rays(height: int, width: int, K: torch.Tensor, ss: int) -> torch.Tensor:
    """Ray directions with z = 1 through ``ss x ss`` sub-pixel centres: ``(H*ss, W*ss, 3)``."""
    u = (torch.arange(width * ss) + 0.5) / ss
    v = (torch.arange(height * ss) + 0.5) / ss
    x = ((u - K[0, 2]) / K[0, 0]).expand(height * ss, -1)
    y = ((v - K[1, 2]) / K[1, 1])[:, None].expand(-1, width * ss)
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def _sphere_hits(
    d: torch.Tensor, dd: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor
) -> torch.Tensor:
    """Nearest positive ``t`` where camera rays ``t * d`` meet each sphere (``inf`` on a miss): ``(S, N)``.

    ``d`` ``(N, 3)`` directions from the origin, ``dd`` ``(N,)`` their squared norms, ``centres``
    ``(S, 3)``, ``radii`` ``(S,)``.
    """
    b = (d @ centres.T).T  # (S, N): d . c
    c = (centres * centres).sum(-1, keepdim=True) - radii[:, None] ** 2
    disc = b * b - dd[None] * c
    t = (b - disc.clamp_min(0).sqrt()) / dd[None]
    return torch.where((disc > 0) & (t > 0), t, torch.full_like(t, math.inf))


def _shadowed(p: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether the ray from each point ``p`` ``(N, 3)`` towards the light meets a sphere: ``(N,)`` bool."""
    # ray p + s L (|L| = 1) meets sphere k at s > 0 iff p is outside it (c > 0), the centre lies
    # ahead (b < 0) and the ray passes within the radius (b^2 > c), with b = (p - c_k).L
    b = (p @ _LIGHT)[None] - (centres @ _LIGHT)[:, None]
    c = (
        (p * p).sum(-1)[None]
        - 2 * (p @ centres.T).T
        + (centres * centres).sum(-1)[:, None]
        - radii[:, None] ** 2
    )
    return ((c > 1e-6) & (b < 0) & (b * b > c)).any(dim=0)


def _hash(i: torch.Tensor, j: torch.Tensor, salt: float) -> torch.Tensor:
    """Deterministic pseudo-random value in [0, 1) per integer cell."""
    x = torch.sin(i * 12.9898 + j * 78.233 + salt) * 43758.5453
    return x - torch.floor(x)


def _ground_albedo(p: torch.Tensor, colours: dict[str, torch.Tensor]) -> torch.Tensor:
    checker = ((torch.floor(p[:, 0] / 0.5) + torch.floor(p[:, 2] / 0.5)) % 2)[:, None]
    base = torch.lerp(colours["tile_a"], colours["tile_b"], checker)
    mix = ((p[:, 0:1] + 3.0) / 6.0).clamp(0, 1)
    tint = torch.lerp(colours["warm"], colours["cool"], mix)
    return base * tint


def _wall_albedo(p: torch.Tensor, colours: dict[str, torch.Tensor], salt: float) -> torch.Tensor:
    row = torch.floor(p[:, 1] / 0.3)
    xs = p[:, 0] / 0.6 + 0.5 * (row % 2)
    col = torch.floor(xs)
    fy, fx = p[:, 1] / 0.3 - row, xs - col
    mortar = ((fy < 0.09) | (fx < 0.045))[:, None]
    jitter = 0.8 + 0.35 * _hash(row, col, salt)[:, None]
    height = ((GROUND_Y - p[:, 1:2]) / 4.0).clamp(0, 1)  # 0 at the floor, 1 high up
    brick = colours["brick"] * jitter * (1.0 - 0.35 * height)
    return torch.where(mortar, colours["mortar"].expand_as(brick), brick)


def _sphere_albedo(n_local: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lon = torch.atan2(n_local[:, 2], n_local[:, 0])
    lat = torch.asin(n_local[:, 1].clamp(-1, 1))
    checker = ((torch.floor(lon / (math.pi / 4)) + torch.floor(lat / (math.pi / 6))) % 2)[:, None]
    return torch.lerp(a, b, checker)


def _scene(
    num_frames: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Sphere centres ``(T, 2, 3)``, radii ``(2,)``, roll angles ``(T, 2)`` and colours for a seed."""
    g = torch.Generator().manual_seed(seed)

    def jitter(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.rand(*shape, generator=g) * 2 - 1) * scale

    s = torch.linspace(0, 1, num_frames) if num_frames > 1 else torch.zeros(1)
    radii = torch.tensor([0.55, 0.4]) * (1 + jitter(2, scale=0.1))
    x_a = -1.6 + 3.2 * s + jitter(1, scale=0.2)
    x_b = 1.3 - 2.4 * s + jitter(1, scale=0.2)
    bounces = 2 + int(torch.randint(0, 2, (1,), generator=g))
    y_b = GROUND_Y - radii[1] - 0.9 * torch.sin(math.pi * bounces * s).abs()
    centres = torch.stack(
        [
            torch.stack([x_a, torch.full_like(s, GROUND_Y - float(radii[0])), torch.full_like(s, 4.0)], -1),
            torch.stack([x_b, y_b, torch.full_like(s, 5.3)], -1),
        ],
        dim=1,
    )
    # rolling without slipping along +x turns the sphere about +z by dx / r
    roll = torch.stack([(x_a - x_a[0]) / radii[0], -(x_b - x_b[0]) / radii[1]], dim=-1)

    def colour(r: float, gr: float, b: float, scale: float = 0.06) -> torch.Tensor:
        return (torch.tensor([r, gr, b]) + jitter(3, scale=scale)).clamp(0, 1)

    colours = {
        "tile_a": colour(0.93, 0.9, 0.82),
        "tile_b": colour(0.34, 0.42, 0.46),
        "warm": colour(1.0, 0.86, 0.7, 0.04),
        "cool": colour(0.72, 0.88, 1.0, 0.04),
        "brick": colour(0.72, 0.33, 0.22),
        "mortar": colour(0.82, 0.8, 0.76, 0.03),
        "sphere0_a": colour(0.12, 0.38, 0.85),
        "sphere0_b": colour(0.98, 0.8, 0.2),
        "sphere1_a": colour(0.85, 0.2, 0.55),
        "sphere1_b": colour(0.95, 0.95, 0.95, 0.03),
    }
    return centres, radii, roll, colours


def _background(d: torch.Tensor, colours: dict[str, torch.Tensor], salt: float) -> dict[str, torch.Tensor]:
    """Static ground + wall seen along rays ``d`` ``(N, 3)``: ``t`` ``(N,)``, ``albedo`` ``(N, 3)``, ``lit`` ``(N,)``."""
    t_ground = torch.where(
        d[:, 1] > 0, GROUND_Y / d[:, 1].clamp_min(1e-12), torch.full_like(d[:, 1], math.inf)
    )
    t_wall = WALL_Z / d[:, 2]
    ground = t_ground < t_wall
    t = torch.where(ground, t_ground, t_wall)
    p = t[:, None] * d
    albedo = torch.where(ground[:, None], _ground_albedo(p, colours), _wall_albedo(p, colours, salt))
    normal_dot_light = torch.where(ground, -_LIGHT[1], -_LIGHT[2]).clamp_min(0)  # normals -y and -z
    return {"t": t, "albedo": albedo, "lit": normal_dot_light}


def _render_frame(
    d: torch.Tensor,
    dd: torch.Tensor,
    bg: dict[str, torch.Tensor],
    centres: torch.Tensor,
    radii: torch.Tensor,
    roll: torch.Tensor,
    colours: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Shaded colour ``(N, 3)`` of rays ``d`` ``(N, 3)`` (``dd = |d|^2``) over the background ``bg``."""
    t_sphere, which = _sphere_hits(d, dd, centres, radii).min(dim=0)
    on_sphere = t_sphere < bg["t"]
    t = torch.where(on_sphere, t_sphere, bg["t"])
    p = t[:, None] * d
    albedo, lit = bg["albedo"].clone(), bg["lit"].clone()
    for k in range(centres.shape[0]):
        hit = on_sphere & (which == k)
        n = (p[hit] - centres[k]) / radii[k]
        cos, sin = math.cos(roll[k]), math.sin(roll[k])
        rot_inv = torch.tensor([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])  # R_z(-roll)
        albedo[hit] = _sphere_albedo(n @ rot_inv.T, colours[f"sphere{k}_a"], colours[f"sphere{k}_b"])
        lit[hit] = (n @ _LIGHT).clamp_min(0)
    light = _AMBIENT + _DIFFUSE * lit * (~_shadowed(p, centres, radii)).float()
    return (albedo * light[:, None]).clamp(0, 1)


def make_example_clip(
    num_frames: int = 14,
    height: int = 256,
    width: int = 384,
    seed: int = 0,
    fps: float = 8.0,
) -> tuple[Video, torch.Tensor, torch.Tensor]:
    """Render the example scene (see the module docstring) seen from a static camera.

    Args:
        num_frames: frames ``T``; the motion spans the clip whatever its length.
        height: image height ``H`` in pixels.
        width: image width ``W`` in pixels.
        seed: varies colours, sphere sizes, start positions and bounce count (deterministic).
        fps: frame rate stored in the returned :class:`~recapture.io.Video`.

    Returns:
        ``(video, depth, K)``: ``video.frames`` ``(T, 3, H, W)`` float32 in [0, 1], planar depth
        ``(T, 1, H, W)`` in scene units (metres), intrinsics ``K`` ``(3, 3)`` in pixels. The camera
        pose is the identity (camera-to-world, OpenCV axes).
    """
    for name, value, minimum in (("num_frames", num_frames, 1), ("height", height, 8), ("width", width, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise RecaptureError(f"{name}={value!r} must be an integer >= {minimum}")
    if not (math.isfinite(fps) and fps > 0):
        raise RecaptureError(f"fps={fps!r} must be a positive number")
    K = example_intrinsics(height, width)
    centres, radii, roll, colours = _scene(num_frames, seed)
    ss = 2  # colour is averaged over 2 x 2 sub-pixel rays; depth uses the pixel-centre ray
    d_fine = _rays(height, width, K, ss).reshape(-1, 3)
    d_centre = _rays(height, width, K, 1).reshape(-1, 3)
    dd_fine, dd_centre = (d_fine * d_fine).sum(-1), (d_centre * d_centre).sum(-1)
    bg = _background(d_fine, colours, float(seed))
    t_bg_centre = _background(d_centre, colours, float(seed))["t"]
    frames = torch.empty(num_frames, 3, height, width)
    depth = torch.empty(num_frames, 1, height, width)
    for i in range(num_frames):
        rgb = _render_frame(d_fine, dd_fine, bg, centres[i], radii, roll[i], colours)
        rgb = rgb.reshape(height * ss, width * ss, 3).permute(2, 0, 1)
        frames[i] = F.avg_pool2d(rgb[None], ss)[0]
        t_sphere = _sphere_hits(d_centre, dd_centre, centres[i], radii).amin(dim=0)
        depth[i, 0] = torch.minimum(t_sphere, t_bg_centre).reshape(
            height, width
        )  # rays have z = 1: t is planar z
    video = Video(frames=frames, fps=float(fps), path=None, source_size=(height, width))
    return video, depth, K
