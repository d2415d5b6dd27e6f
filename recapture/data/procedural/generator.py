"""Sample varied procedural scenes from a seed: ground, walls or open sky, 1-5 moving primitives, a light.

World: Z-up metres, ground ``z = 0``, the action within ~4 m of the origin, a sky dome of radius
:data:`DOME_RADIUS`. Everything is drawn from one ``numpy`` generator, so a seed fixes the scene.

* ground: checker, tiles, stripes or noise, sometimes tinted by a large colour ramp;
* background: open sky (gradient, clouds or azimuth stripes) or walls (a back wall, sometimes a
  side wall making a corner: bricks, plain or a vertical gradient) in front of the sky;
* primitives: spheres and boxes with random textures, each rolling (spheres) or sliding (boxes),
  bouncing (tumbling as they fly), or turning in place, placed so their paths do not intersect;
* light: a directional light from a random azimuth and elevation, ambient term, hard shadows.

Albedos are at least 0.06 and the ambient term at least 0.22, so no pixel is ever black.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import torch
from torch import Tensor

from recapture.data.procedural.scene import Dome, Light, Plane, Primitive, Scene, axis_rotation
from recapture.data.procedural.textures import (
    Bricks,
    Checker,
    Gradient,
    Noise,
    Plain,
    Sky,
    Stripes,
    Texture,
    Tiles,
    Tinted,
)
from recapture.utils import RecaptureError

__all__ = ["DOME_RADIUS", "sample_scene"]

DOME_RADIUS = 60.0
_ALBEDO_RANGE = (0.06, 1.0)
_Z = np.array([0.0, 0.0, 1.0])


def _t(a: np.ndarray | list[float]) -> Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _colour(
    g: np.random.Generator, sat: tuple[float, float] = (0.15, 0.85), val: tuple[float, float] = (0.35, 0.95)
) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(g.uniform(), g.uniform(*sat), g.uniform(*val)))


def _pair(g: np.random.Generator) -> Tensor:
    """Two contrasting colours ``(2, 3)``: another hue, or the same hue lighter/darker."""
    a = _colour(g)
    if g.uniform() < 0.5:
        b = _colour(g)
    else:
        h, s, v = colorsys.rgb_to_hsv(*a)
        b = np.array(
            colorsys.hsv_to_rgb(h, s * g.uniform(0.4, 1.0), v * 0.45 if v > 0.6 else min(1.0, v * 1.8))
        )
    return _t(np.stack([a, b]))


def _ground_texture(g: np.random.Generator) -> tuple[str, Texture]:
    kind = str(g.choice(["checker", "tiles", "stripes", "noise"]))
    salt = float(g.uniform(0, 100))
    if kind == "checker":
        c = float(g.uniform(0.5, 1.5))
        tex: Texture = Checker(_pair(g), cell=(c, c), jitter=float(g.uniform(0.0, 0.3)), salt=salt)
    elif kind == "tiles":
        base = _colour(g)
        cols = _t(np.stack([base, np.clip(base * g.uniform(0.6, 0.9), 0, 1)]))
        grout = _t(_colour(g, (0.0, 0.2), (0.2, 0.9)))
        tex = Tiles(
            cols,
            grout,
            float(g.uniform(0.3, 1.0)),
            float(g.uniform(0.04, 0.1)),
            float(g.choice([0.0, 0.5])),
            salt,
        )
    elif kind == "stripes":
        tex = Stripes(
            _pair(g), float(g.uniform(0.5, 1.5)), float(g.uniform(0, math.pi)), float(g.uniform(0.3, 0.7))
        )
    else:
        tex = Noise(_pair(g), float(g.uniform(0.3, 2.0)), int(g.integers(3, 5)), salt)
    if g.uniform() < 0.35:  # a large-scale colour ramp across the ground
        ramp = _t(np.stack([1 - g.uniform(0, 0.3, 3), 1 - g.uniform(0, 0.3, 3)]))
        tex = Tinted(tex, ramp, int(g.integers(0, 2)), -8.0, 16.0)
    return kind, tex


def _wall_texture(g: np.random.Generator, height: float) -> tuple[str, Texture]:
    kind = str(g.choice(["bricks", "plain", "gradient"]))
    if kind == "bricks":
        w = float(g.uniform(0.4, 0.8))
        brick = _t(_colour(g, (0.3, 0.8), (0.4, 0.85)))
        mortar = _t(_colour(g, (0.0, 0.15), (0.6, 0.9)))
        tex: Texture = Bricks(
            brick,
            mortar,
            (w, w * g.uniform(0.35, 0.6)),
            (0.045, 0.09),
            (0.8, 0.35),
            0.0,
            height,
            float(g.uniform(0.0, 0.4)),
            float(g.uniform(0, 100)),
        )
    elif kind == "plain":
        tex = Plain(_t(_colour(g, (0.05, 0.6), (0.4, 0.95))))
    else:
        tex = Gradient(_pair(g), axis=1, start=0.0, length=height)
    return kind, tex


def _sky(g: np.random.Generator) -> tuple[str, Sky]:
    kind = str(g.choice(["gradient", "clouds", "stripes"]))
    horizon = _t(np.clip(_colour(g, (0.0, 0.3), (0.75, 0.98)), 0.1, 1))
    zenith = _t(np.clip(_colour(g, (0.2, 0.7), (0.5, 0.95)), 0.1, 1))
    sky = Sky(horizon, zenith, salt=float(g.uniform(0, 100)))
    if kind == "clouds":
        sky.clouds = float(g.uniform(0.3, 0.7))
        sky.cloud_colour = _t(np.full(3, g.uniform(0.85, 1.0)))
        sky.cloud_scale = float(g.uniform(0.2, 0.6))
    elif kind == "stripes":
        sky.stripes, sky.stripe_deg = float(g.uniform(0.08, 0.2)), float(g.uniform(8, 30))
    return kind, sky


def _walls(g: np.random.Generator, azimuth: float) -> list[tuple[str, Plane]]:
    """A back wall facing the viewing azimuth, sometimes with a side wall making a corner."""
    view = np.array([math.cos(azimuth), math.sin(azimuth), 0.0])  # from the scene towards the camera
    side = np.array([-view[1], view[0], 0.0])
    back_d, height = float(g.uniform(5.0, 9.0)), float(g.uniform(2.5, 7.0))
    half_w = float(g.uniform(7.0, 15.0))
    bounds = [-half_w, half_w, 0.0, height]
    planes = []
    if g.uniform() < 0.5:  # a side wall on one side, from the back wall towards the camera
        sign = float(g.choice([-1.0, 1.0]))
        side_d = float(g.uniform(4.5, 8.0))
        normal = -sign * side
        kind, tex = _wall_texture(g, height)
        planes.append(
            (
                kind,
                Plane(
                    _t(side_d * sign * side),
                    _t(normal),
                    _t(view),
                    _t(_Z),
                    tex,
                    (-back_d, -back_d + float(g.uniform(6.0, 16.0)), 0.0, height),
                ),
            )
        )
        bounds[0 if sign < 0 else 1] = sign * side_d  # the back wall ends at the corner
    kind, tex = _wall_texture(g, height)
    planes.insert(0, (kind, Plane(_t(-back_d * view), _t(view), _t(side), _t(_Z), tex, tuple(bounds))))
    return planes


def _sphere_texture(g: np.random.Generator) -> Texture:
    kind = g.choice(["checker", "meridians", "bands", "plain"], p=[0.4, 0.25, 0.2, 0.15])
    if kind == "checker":
        return Checker(
            _pair(g), cell=(2 * math.pi / int(g.choice([4, 6, 8, 12])), math.pi / int(g.choice([3, 4, 6])))
        )
    if kind == "meridians":
        return Stripes(_pair(g), 2 * math.pi / int(g.choice([3, 4, 6, 8])), 0.0, 0.5)
    if kind == "bands":
        return Stripes(_pair(g), math.pi / int(g.choice([3, 5, 7])), math.pi / 2, float(g.uniform(0.3, 0.7)))
    return Plain(_t(_colour(g)))


def _box_texture(g: np.random.Generator) -> Texture:
    kind = g.choice(["checker", "stripes", "noise", "tiles", "plain"], p=[0.35, 0.2, 0.15, 0.15, 0.15])
    if kind == "checker":
        c = float(g.uniform(0.1, 0.4))
        return Checker(_pair(g), (c, c), float(g.uniform(0.6, 1.0)), float(g.uniform(0.0, 0.2)))
    if kind == "stripes":
        return Stripes(_pair(g), float(g.uniform(0.1, 0.4)), float(g.choice([0.0, math.pi / 2, math.pi / 4])))
    if kind == "noise":
        return Noise(_pair(g), float(g.uniform(0.1, 0.4)), 3, float(g.uniform(0, 100)))
    if kind == "tiles":
        return Tiles(_pair(g), _t(_colour(g, (0.0, 0.2), (0.3, 0.9))), float(g.uniform(0.15, 0.4)), 0.08)
    return Plain(_t(_colour(g)))


def _support(rots: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Height ``(T,)`` of a box's centre above its lowest point for rotations ``(T, 3, 3)``."""
    return (np.abs(rots[:, 2, :]) * half[None]).sum(-1)


def _random_rotation(g: np.random.Generator) -> np.ndarray:
    q = g.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _motion(
    g: np.random.Generator, kind: str, size: np.ndarray, s: np.ndarray
) -> tuple[str, np.ndarray, np.ndarray]:
    """A motion for a primitive: name, centres ``(T, 3)`` and rotations ``(T, 3, 3)``."""
    motion = str(g.choice(["roll", "bounce", "turn"], p=[0.45, 0.3, 0.25]))
    heading = g.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(heading), math.sin(heading), 0.0])
    mid = np.append(g.uniform(-2.5, 2.5, 2), 0.0)
    r0 = _random_rotation(g) if kind == "sphere" else axis_rotation(_Z, np.array([g.uniform(0, math.pi)]))[0]
    if motion == "roll":  # spheres roll without slipping; boxes slide and turn about z
        dist = g.uniform(1.0, 4.0) if kind == "sphere" else g.uniform(0.5, 3.0)
        centres = mid[None] + (s[:, None] - 0.5) * dist * direction[None]
        if kind == "sphere":
            centres[:, 2] = size[0]
            rots = axis_rotation(np.cross(_Z, direction), dist * s / size[0]) @ r0
            return "roll", centres, rots
        rots = axis_rotation(_Z, g.uniform(-1.5, 1.5) * s) @ r0
        centres[:, 2] = size[2]
        return "slide", centres, rots
    if motion == "bounce":  # hops along a line, tumbling in flight
        dist = g.uniform(0.0, 2.5)
        centres = mid[None] + (s[:, None] - 0.5) * dist * direction[None]
        spin = axis_rotation(_unit(g.normal(size=3)), g.uniform(1.0, 5.0) * s)
        rots = spin @ (r0 if kind == "sphere" else _random_rotation(g))
        rest = np.full_like(s, size[0]) if kind == "sphere" else _support(rots, size)
        centres[:, 2] = rest + g.uniform(0.5, 1.5) * np.abs(
            np.sin(math.pi * int(g.integers(1, 4)) * s + g.uniform(0, 0.5))
        )
        return "bounce", centres, rots
    # turning in place (drifting a little)
    centres = mid[None] + (s[:, None] - 0.5) * g.uniform(0.0, 0.5) * direction[None]
    axis = _unit(g.normal(size=3)) if kind == "sphere" else _Z
    rots = axis_rotation(axis, g.uniform(1.0, 4.0) * float(g.choice([-1, 1])) * s) @ r0
    centres[:, 2] = size[0] if kind == "sphere" else size[2]
    return "turn", centres, rots


def _primitives(g: np.random.Generator, count: int, s: np.ndarray) -> list[Primitive]:
    objects: list[Primitive] = []
    for _ in range(count):
        for _attempt in range(30):
            kind = "sphere" if g.uniform() < 0.55 else "box"
            size = np.array([g.uniform(0.3, 0.9)]) if kind == "sphere" else g.uniform(0.25, 0.8, 3)
            name, centres, rots = _motion(g, kind, size, s)
            radius = float(np.linalg.norm(size)) if kind == "box" else float(size[0])
            clear = all(
                np.linalg.norm(centres - o.centres.numpy(), axis=-1).min() > radius + o.bounding_radius + 0.05
                for o in objects
            )
            if clear:
                texture = _sphere_texture(g) if kind == "sphere" else _box_texture(g)
                objects.append(
                    Primitive(kind, len(objects) + 1, _t(centres), _t(rots), _t(size), texture, name)
                )
                break
    return objects


def sample_scene(seed: int, num_frames: int, max_objects: int = 5, min_objects: int = 1) -> Scene:
    """Sample a varied procedural scene (module docstring) for ``seed`` (deterministic).

    Args:
        seed: any non-negative integer (< 2**64).
        num_frames: frames ``T``; every motion spans the clip whatever its length.
        max_objects: at most this many primitives (1..8).
        min_objects: at least this many are attempted (placement may drop one that cannot avoid
            the others; the first always fits).

    Returns:
        A :class:`~recapture.data.procedural.Scene` (Z-up world, metres). ``scene.meta`` holds the
        layout: ``view_azimuth`` (radians; cameras should look from there, walls are behind the
        action) or None for open scenes, and the names of the ground, walls, sky and motions.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise RecaptureError(f"num_frames={num_frames!r} must be a positive integer")
    if not 1 <= min_objects <= max_objects <= 8:
        raise RecaptureError(
            f"need 1 <= min_objects <= max_objects <= 8, got min_objects={min_objects}, max_objects={max_objects}"
        )
    g = np.random.default_rng(seed)
    s = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.full(1, 0.5)
    ground_kind, ground_tex = _ground_texture(g)
    ground = Plane(_t([0, 0, 0]), _t(_Z), _t([1, 0, 0]), _t([0, 1, 0]), ground_tex)
    sky_kind, sky = _sky(g)
    azimuth = float(g.uniform(0, 2 * math.pi))
    walls = _walls(g, azimuth) if g.uniform() < 0.5 else []
    objects = _primitives(g, int(g.integers(min_objects, max_objects + 1)), s)
    light_az, light_el = g.uniform(0, 2 * math.pi), math.radians(g.uniform(25, 70))
    direction = np.array(
        [math.cos(light_el) * math.cos(light_az), math.cos(light_el) * math.sin(light_az), math.sin(light_el)]
    )
    ambient = float(g.uniform(0.22, 0.4))
    diffuse = float(min(g.uniform(0.55, 0.8), 1.15 - ambient))
    return Scene(
        num_frames=num_frames,
        seed=int(seed),
        objects=objects,
        planes=[w for _, w in walls] + [ground],
        light=Light(_t(direction), ambient, diffuse, shadows=True),
        dome=Dome(DOME_RADIUS, sky),
        albedo_range=_ALBEDO_RANGE,
        meta={
            "view_azimuth": azimuth if walls else None,
            "ground": ground_kind,
            "walls": [k for k, _ in walls],
            "sky": sky_kind,
            "motions": [o.motion for o in objects],
        },
    )
