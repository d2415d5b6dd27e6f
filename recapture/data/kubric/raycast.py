"""Procedural Kubric-like scenes for the synthetic Kubric-4D layout, on the project's one ray caster.

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

The scene model and the ray caster are :mod:`recapture.data.procedural`'s (shared with the example
clip and the procedural training data); this module only samples the Kubric-like content.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from recapture.data.procedural import (
    Checker,
    Dome,
    Light,
    Plane,
    Primitive,
    Scene,
    Sky,
    axis_rotation,
    render,
)
from recapture.data.procedural.raycast import intersect, shade
from recapture.utils import RecaptureError

__all__ = ["Primitive", "SyntheticScene", "cast_rays", "make_scene", "render_view"]

_AMBIENT, _DIFFUSE = 0.4, 0.6
_DOME_RADIUS = 40.0

SyntheticScene = Scene
"""The Kubric-like scenes are plain :class:`~recapture.data.procedural.Scene` objects."""


def make_scene(num_frames: int, seed: int = 0) -> Scene:
    """Sample a scene for ``seed``: object sizes, colours, paths and spins (deterministic).

    Args:
        num_frames: frames ``T``; every motion spans the clip whatever its length.
        seed: random seed.

    Returns:
        A :class:`~recapture.data.procedural.Scene` whose objects stay within ~4 m of the origin
        (seen by all 16 views).
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise RecaptureError(f"num_frames={num_frames!r} must be a positive integer")
    g = np.random.default_rng(seed)
    s = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)

    def colour(lo: float = 0.25, hi: float = 0.95) -> np.ndarray:
        return g.uniform(lo, hi, 3)

    objects: list[tuple] = []
    # 1. a sphere rolling without slipping along a straight line through the middle
    r0 = g.uniform(0.9, 1.3)
    heading = g.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(heading), math.sin(heading), 0.0])
    start = np.append(g.uniform(-0.6, 0.6, 2), 0.0) - 1.8 * direction
    centres = start[None] + 3.6 * s[:, None] * direction[None]
    centres[:, 2] = r0
    axis = np.cross(np.array([0.0, 0.0, 1.0]), direction)
    rot = axis_rotation(axis, 3.6 * s / r0)
    objects.append(("sphere", centres, rot, np.array([r0]), np.stack([colour(), colour()])))
    # 2. a box sliding and turning about z, resting on the ground
    half = g.uniform([0.5, 0.5, 0.6], [0.9, 0.9, 1.1])
    angle = g.uniform(0, 2 * math.pi)
    base = np.array([2.0 * math.cos(angle), 2.0 * math.sin(angle), half[2]])
    drift = np.append(g.uniform(-0.8, 0.8, 2), 0.0)
    centres = base[None] + s[:, None] * drift[None]
    rot = axis_rotation(np.array([0.0, 0.0, 1.0]), g.uniform(0, math.pi) + g.uniform(-1.5, 1.5) * s)
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
        rot = axis_rotation(np.array([0.0, 0.0, 1.0]), g.uniform(2, 5) * s)
        objects.append(("sphere", centres, rot, np.array([r1]), np.stack([colour(), colour()])))

    light = np.array([0.4, -0.3, 1.0]) + g.uniform(-0.2, 0.2, 3)
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    ground_colours = as_t(np.stack([colour(0.55, 0.9), colour(0.2, 0.45)]))
    sky_colours = as_t(np.stack([colour(0.6, 0.95), colour(0.2, 0.6)]))  # horizon, zenith
    # lon/lat checker on spheres; 0.2 m face checker on boxes, shifted on the top and bottom faces
    textures = {
        "sphere": lambda cols: Checker(cols, cell=(math.pi / 4, math.pi / 6)),
        "box": lambda cols: Checker(cols, cell=(0.2, 0.2), contrast=0.8, top_shift=0.1),
    }
    ground = Plane(
        origin=torch.zeros(3, dtype=torch.float64),
        normal=as_t([0.0, 0.0, 1.0]),
        u_axis=as_t([1.0, 0.0, 0.0]),
        v_axis=as_t([0.0, 1.0, 0.0]),
        texture=Checker(ground_colours, cell=(0.75, 0.75), jitter=0.3),
    )
    return Scene(
        num_frames=num_frames,
        seed=seed,
        objects=[
            Primitive(kind, k + 1, as_t(c), as_t(r), as_t(sz), textures[kind](as_t(col)))
            for k, (kind, c, r, sz, col) in enumerate(objects)
        ],
        planes=[ground],
        light=Light(as_t(light / np.linalg.norm(light)), _AMBIENT, _DIFFUSE, shadows=False),
        dome=Dome(_DOME_RADIUS, Sky(sky_colours[0], sky_colours[1], stripes=0.15, stripe_deg=15.0)),
        albedo_range=(0.12, 1.0),
    )


def cast_rays(scene: Scene, frame: int, origin: Tensor, directions: Tensor) -> dict[str, Tensor]:
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
    d = (d / d.norm(dim=-1, keepdim=True))[None]
    o = origin.to(torch.float64).reshape(1, 3)
    frames = torch.tensor([frame])
    hits = intersect(scene, frames, o, d)
    ids = torch.tensor([0, 0] + [0] * len(scene.planes) + [obj.instance_id for obj in scene.objects])
    return {
        "distance": hits.t[0],
        "segmentation": ids[hits.surface[0] + 1],
        "rgb": shade(scene, frames, o, d, hits)[0],
    }


def render_view(
    scene: Scene,
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
    through the pixel centre (float64), so they are exact. Frames are traced in batches of ``max_rays``.

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
    out = render(
        scene,
        frame_list,
        c2w.to(torch.float64),
        K.to(torch.float64),
        size,
        supersample,
        torch.float64,
        max_rays,
    )
    return {k: v[0] for k, v in out.items()} if single else out
