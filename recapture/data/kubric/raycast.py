"""Procedural Kubric-like scenes with an exact ray caster (the ground truth behind the synthetic layout).

World: Z-up metres, like Kubric-4D. Contents:

* a ground plane z = 0 with a jittered checkerboard of 0.75 m tiles (instance id 0);
* a dome (sphere of radius ``dome_radius`` around the origin, emissive sky gradient with azimuth
  stripes) closing the scene, so every ray has a finite depth (instance id 0, like Kubric's dome);
* 2-3 moving textured primitives (ids 1..K): a sphere rolling on the ground, a box sliding and
  turning about z, and (for some seeds) a sphere bouncing across.

Shading is Lambertian with one directional light and ambient term (no shadows), so colour does not
depend on the viewpoint and the 16 views agree exactly, as a merged point cloud assumes. Albedo and
lighting keep every colour above ~0.05, so no surface is pure black (GCD's ``blur_into_black``
treats exact-black pixels as holes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from recapture.utils import RecaptureError

__all__ = ["Primitive", "SyntheticScene", "cast_rays", "make_scene", "render_view"]

_AMBIENT, _DIFFUSE = 0.4, 0.6
_EPS = 1e-6


@dataclass
class Primitive:
    """A rigid textured object moving over the frames.

    Attributes:
        kind: ``"sphere"`` or ``"box"``.
        instance_id: segmentation id (>= 1).
        centres: ``(T, 3)`` world positions (float64).
        rotations: ``(T, 3, 3)`` world-from-object rotations (float64).
        size: sphere ``(1,)`` radius or box ``(3,)`` half extents.
        colours: ``(2, 3)`` the two albedos of its checker texture.
    """

    kind: str
    instance_id: int
    centres: Tensor
    rotations: Tensor
    size: Tensor
    colours: Tensor


@dataclass
class SyntheticScene:
    """A procedural scene: static ground and dome plus moving :class:`Primitive` objects."""

    num_frames: int
    seed: int
    objects: list[Primitive]
    ground_colours: Tensor  # (2, 3)
    sky_colours: Tensor  # (2, 3): horizon, zenith
    light: Tensor  # (3,) unit vector towards the light
    dome_radius: float = 40.0


def _rotation(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotations ``(T, 3, 3)`` about a unit ``axis`` ``(3,)`` by ``angle`` ``(T,)`` radians."""
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + s * kx[None] + (1 - c) * (kx @ kx)[None]


def make_scene(num_frames: int, seed: int = 0) -> SyntheticScene:
    """Sample a scene for ``seed``: object sizes, colours, paths and spins (deterministic).

    Args:
        num_frames: frames ``T``; every motion spans the clip whatever its length.
        seed: random seed.

    Returns:
        A :class:`SyntheticScene` whose objects stay within ~4 m of the origin (seen by all 16 views).
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise RecaptureError(f"num_frames={num_frames!r} must be a positive integer")
    g = np.random.default_rng(seed)
    s = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)

    def colour(lo: float = 0.25, hi: float = 0.95) -> np.ndarray:
        return g.uniform(lo, hi, 3)

    objects: list[Primitive] = []
    # 1. a sphere rolling without slipping along a straight line through the middle
    r0 = g.uniform(0.9, 1.3)
    heading = g.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(heading), math.sin(heading), 0.0])
    start = np.append(g.uniform(-0.6, 0.6, 2), 0.0) - 1.8 * direction
    centres = start[None] + 3.6 * s[:, None] * direction[None]
    centres[:, 2] = r0
    axis = np.cross(np.array([0.0, 0.0, 1.0]), direction)
    rot = _rotation(axis, 3.6 * s / r0)
    objects.append(("sphere", centres, rot, np.array([r0]), np.stack([colour(), colour()])))
    # 2. a box sliding and turning about z, resting on the ground
    half = g.uniform([0.5, 0.5, 0.6], [0.9, 0.9, 1.1])
    angle = g.uniform(0, 2 * math.pi)
    base = np.array([2.0 * math.cos(angle), 2.0 * math.sin(angle), half[2]])
    drift = np.append(g.uniform(-0.8, 0.8, 2), 0.0)
    centres = base[None] + s[:, None] * drift[None]
    rot = _rotation(np.array([0.0, 0.0, 1.0]), g.uniform(0, math.pi) + g.uniform(-1.5, 1.5) * s)
    objects.append(("box", centres, rot, half, np.stack([colour(), colour()])))
    # 3. (most seeds) a smaller sphere bouncing across, spinning about z
    if g.uniform() < 0.75:
        r1 = g.uniform(0.5, 0.75)
        heading = g.uniform(0, 2 * math.pi)
        direction = np.array([math.cos(heading), math.sin(heading), 0.0])
        start = np.append(g.uniform(-1.0, 1.0, 2), 0.0) - 1.5 * direction
        centres = start[None] + 3.0 * s[:, None] * direction[None]
        bounces = int(g.integers(1, 4))
        centres[:, 2] = r1 + g.uniform(0.8, 1.6) * np.abs(np.sin(math.pi * bounces * s))
        rot = _rotation(np.array([0.0, 0.0, 1.0]), g.uniform(2, 5) * s)
        objects.append(("sphere", centres, rot, np.array([r1]), np.stack([colour(), colour()])))

    light = np.array([0.4, -0.3, 1.0]) + g.uniform(-0.2, 0.2, 3)
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    return SyntheticScene(
        num_frames=num_frames,
        seed=seed,
        objects=[
            Primitive(kind, k + 1, as_t(c), as_t(r), as_t(sz), as_t(col))
            for k, (kind, c, r, sz, col) in enumerate(objects)
        ],
        ground_colours=as_t(np.stack([colour(0.55, 0.9), colour(0.2, 0.45)])),
        sky_colours=as_t(np.stack([colour(0.6, 0.95), colour(0.2, 0.6)])),
        light=as_t(light / np.linalg.norm(light)),
    )


def _hash(i: Tensor, j: Tensor) -> Tensor:
    """Deterministic pseudo-random value in [0, 1) per integer cell."""
    x = torch.sin(i * 12.9898 + j * 78.233) * 43758.5453
    return x - torch.floor(x)


def _hit_sphere(o: Tensor, d: Tensor, centres: Tensor, radius: float) -> Tensor:
    """Entry distance ``(F, N)`` of unit rays ``o + t d`` into spheres at ``centres`` ``(F, 3)`` (inf on a miss)."""
    oc = o[None] - centres  # (F, 3)
    b = oc @ d.T  # (F, N)
    c = (oc * oc).sum(-1, keepdim=True) - radius * radius
    disc = b * b - c
    t = -b - disc.clamp_min(0).sqrt()
    return torch.where((disc > 0) & (t > _EPS), t, torch.full_like(t, math.inf))


def _hit_box(o: Tensor, d: Tensor, centres: Tensor, rots: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
    """Slab test in each frame's box frame: entry ``t`` ``(F, N)`` (inf on a miss) and entry axis ``(F, N)``."""
    o_l = (o[None] - centres)[:, None, :] @ rots  # (F, 1, 3): rot^T (o - c)
    d_l = torch.einsum("nk,fkj->fnj", d, rots)  # (F, N, 3): rot^T d
    d_l = torch.where(d_l.abs() < 1e-12, torch.full_like(d_l, 1e-12), d_l)
    t1, t2 = (-half - o_l) / d_l, (half - o_l) / d_l
    t_near, axis = torch.minimum(t1, t2).max(dim=-1)
    t_far = torch.maximum(t1, t2).amin(dim=-1)
    hit = (t_far >= t_near) & (t_near > _EPS)
    return torch.where(hit, t_near, torch.full_like(t_near, math.inf)), axis


def _background(scene: SyntheticScene, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """Static ground + dome along unit rays: distance ``(N,)`` and shaded colour ``(N, 3)``."""
    n = d.shape[0]
    t_ground = torch.where(
        d[:, 2] < -1e-12, -o[2] / d[:, 2].clamp(max=-1e-12), torch.full((n,), math.inf, dtype=d.dtype)
    )
    b = d @ o
    t_dome = -b + (b * b - (o @ o - scene.dome_radius**2)).clamp_min(0).sqrt()
    ground = t_ground < t_dome
    t = torch.where(ground, t_ground, t_dome)
    p = o[None] + t[:, None] * d
    # ground: jittered checkerboard, lit from above
    ix, iy = torch.floor(p[:, 0] / 0.75), torch.floor(p[:, 1] / 0.75)
    parity = ((ix + iy) % 2)[:, None]
    jitter = (0.85 + 0.3 * _hash(ix, iy))[:, None]
    gc, sc = scene.ground_colours.to(d.dtype), scene.sky_colours.to(d.dtype)
    albedo = (torch.lerp(gc[0], gc[1], parity) * jitter).clamp(0.12, 1)
    lit = albedo * (_AMBIENT + _DIFFUSE * float(scene.light[2].clamp_min(0)))
    # dome: emissive sky, horizon-to-zenith gradient with 15-degree azimuth stripes
    elev = torch.asin((p[:, 2] / scene.dome_radius).clamp(0, 1)) / (math.pi / 2)
    stripes = (torch.floor(torch.atan2(p[:, 1], p[:, 0]) / math.radians(15)) % 2)[:, None]
    sky = torch.lerp(sc[0], sc[1], elev[:, None]) * (0.85 + 0.15 * stripes)
    return t, torch.where(ground[:, None], lit, sky)


def _intersect(scene: SyntheticScene, frames: Tensor, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest hit along unit rays ``d`` ``(N, 3)`` from ``o`` at ``frames`` ``(F,)``.

    Returns distance ``(F, N)``, instance id ``(F, N)`` (0 = ground or dome) and colour ``(F, N, 3)``.
    """
    o = o.to(d.dtype)
    t_bg, colour_bg = _background(scene, o, d)
    num_f = frames.shape[0]
    t = t_bg[None].expand(num_f, -1).clone()
    ids = torch.zeros_like(t, dtype=torch.int64)
    axes = []
    for k, obj in enumerate(scene.objects):
        centres, rots = obj.centres[frames].to(d.dtype), obj.rotations[frames].to(d.dtype)
        if obj.kind == "sphere":
            t_obj, axis = _hit_sphere(o, d, centres, float(obj.size[0])), None
        else:
            t_obj, axis = _hit_box(o, d, centres, rots, obj.size.to(d.dtype))
        axes.append(axis)
        closer = t_obj < t
        t = torch.where(closer, t_obj, t)
        ids = torch.where(closer, torch.full_like(ids, k + 1), ids)

    colour = colour_bg[None].expand(num_f, -1, -1).clone()
    for k, obj in enumerate(scene.objects):
        sel = ids == k + 1
        if not bool(sel.any()):
            continue
        f_idx, n_idx = sel.nonzero(as_tuple=True)
        centres = obj.centres[frames][f_idx].to(d.dtype)  # (M, 3)
        rots = obj.rotations[frames][f_idx].to(d.dtype)  # (M, 3, 3)
        p = o[None] + t[sel][:, None] * d[n_idx]
        local = ((p - centres)[:, None, :] @ rots)[:, 0]  # object-frame coordinates
        if obj.kind == "sphere":
            n_local = local / float(obj.size[0])
            lon = torch.atan2(n_local[:, 1], n_local[:, 0])
            lat = torch.asin(n_local[:, 2].clamp(-1, 1))
            checker = ((torch.floor(lon / (math.pi / 4)) + torch.floor(lat / (math.pi / 6))) % 2)[:, None]
        else:
            ax = axes[k][sel]
            rows = torch.arange(len(ax))
            n_local = torch.zeros_like(local)
            n_local[rows, ax] = torch.sign(local[rows, ax])
            cells = torch.floor(local / 0.2)
            checker = ((cells.sum(-1) - cells[rows, ax]) % 2)[:, None] * 0.8 + (ax[:, None] == 2) * 0.1
        normal = (rots @ n_local[:, :, None])[:, :, 0]
        cols = obj.colours.to(d.dtype)
        albedo = torch.lerp(cols[0], cols[1], checker).clamp(0.12, 1)
        colour[sel] = (
            albedo * (_AMBIENT + _DIFFUSE * (normal @ scene.light.to(d.dtype)).clamp_min(0))[:, None]
        )
    return t, ids, colour.clamp(0, 1)


def cast_rays(scene: SyntheticScene, frame: int, origin: Tensor, directions: Tensor) -> dict[str, Tensor]:
    """Trace arbitrary rays at one frame (e.g. an exact visibility test between two cameras).

    Args:
        scene: the scene.
        frame: frame index.
        origin: ``(3,)`` common ray origin (world).
        directions: ``(N, 3)`` directions (normalised here).

    Returns:
        ``distance`` ``(N,)`` float64 to the first hit along the unit direction, ``segmentation``
        ``(N,)`` int64 and ``rgb`` ``(N, 3)`` float64.
    """
    if not 0 <= frame < scene.num_frames:
        raise RecaptureError(f"frame={frame} is out of range; the scene has {scene.num_frames} frames")
    d = directions.to(torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    t, ids, rgb = _intersect(scene, torch.tensor([frame]), origin.to(torch.float64), d)
    return {"distance": t[0], "segmentation": ids[0], "rgb": rgb[0]}


def _rays(c2w: Tensor, K: Tensor, size: tuple[int, int], ss: int) -> Tensor:
    """Unit world directions through ``ss x ss`` sub-pixel centres: ``(H*ss*W*ss, 3)``, row-major."""
    height, width = size
    u = (torch.arange(width * ss, dtype=torch.float64) + 0.5) / ss
    v = (torch.arange(height * ss, dtype=torch.float64) + 0.5) / ss
    x = ((u - K[0, 2]) / K[0, 0])[None, :].expand(height * ss, -1)
    y = ((v - K[1, 2]) / K[1, 1])[:, None].expand(-1, width * ss)
    cam = torch.stack([x, y, torch.ones_like(x)], dim=-1).reshape(-1, 3)
    world = cam @ c2w[:3, :3].T
    return world / world.norm(dim=-1, keepdim=True)


def render_view(
    scene: SyntheticScene,
    frames: int | Sequence[int],
    c2w: Tensor,
    K: Tensor,
    size: tuple[int, int],
    supersample: int = 2,
    max_rays: int = 1 << 21,
) -> dict[str, Tensor]:
    """Ray-cast frames of ``scene`` from one static pinhole camera.

    Pixel ``(u, v)`` (integer indices) has its centre at ``(u + 0.5, v + 0.5)``. Colour averages
    ``supersample x supersample`` sub-pixel rays; distance, depth and segmentation come from the ray
    through the pixel centre, so they are exact. Frames are traced in batches of ``max_rays``.

    Args:
        scene: the scene.
        frames: one frame index or a list, in ``0..T-1``.
        c2w: ``(4, 4)`` OpenCV camera-to-world.
        K: ``(3, 3)`` pixel intrinsics.
        size: ``(H, W)``.
        supersample: sub-pixel rays per side for colour (>= 1).
        max_rays: rays traced at once (memory bound).

    Returns:
        For ``F`` frames (leading axis dropped for a single int): ``rgb`` ``(F, 3, H, W)`` float32 in
        [0, 1], ``distance`` ``(F, H, W)`` float32 Euclidean distance to the camera centre (m),
        ``depth`` ``(F, H, W)`` float32 planar z, ``segmentation`` ``(F, H, W)`` int64 instance ids
        (0 = ground and dome).
    """
    single = isinstance(frames, int)
    frame_list = [frames] if single else list(frames)
    if not frame_list or any(not 0 <= f < scene.num_frames for f in frame_list):
        raise RecaptureError(f"frames={frames!r} out of range; the scene has {scene.num_frames} frames")
    if supersample < 1:
        raise RecaptureError(f"supersample={supersample} must be >= 1")
    height, width = size
    c2w, K = c2w.to(torch.float64), K.to(torch.float64)
    o = c2w[:3, 3]
    d = _rays(c2w, K, size, 1)
    # colour only: float32 is plenty for the supersampled pass
    d_fine = _rays(c2w, K, size, supersample).float() if supersample > 1 else None
    rays_per_frame = d.shape[0] * (1 + supersample * supersample * (supersample > 1))
    step = max(1, max_rays // rays_per_frame)
    out: dict[str, list[Tensor]] = {"rgb": [], "distance": [], "depth": [], "segmentation": []}
    forward_cos = d @ c2w[:3, 2]
    for i in range(0, len(frame_list), step):
        fr = torch.tensor(frame_list[i : i + step])
        t, ids, rgb = _intersect(scene, fr, o, d)
        if d_fine is not None:
            _, _, fine = _intersect(scene, fr, o, d_fine)
            fine = fine.reshape(len(fr), height, supersample, width, supersample, 3)
            rgb = fine.mean(dim=(2, 4)).reshape(len(fr), -1, 3).double()
        out["rgb"].append(rgb.reshape(len(fr), height, width, 3).permute(0, 3, 1, 2).float())
        out["distance"].append(t.reshape(len(fr), height, width).float())
        out["depth"].append((t * forward_cos).reshape(len(fr), height, width).float())
        out["segmentation"].append(ids.reshape(len(fr), height, width))
    result = {k: torch.cat(v) for k, v in out.items()}
    return {k: v[0] for k, v in result.items()} if single else result
