"""The scene model shared by every ray-cast generator: planes, a sky dome, moving primitives, one light.

A :class:`Scene` is geometry over ``num_frames`` time steps in its own world frame (the procedural
generator and the Kubric-like scenes use a Z-up world in metres; the example clip uses the OpenCV
frame of its static camera). Static surfaces are textured :class:`Plane` objects (ground, walls;
optionally bounded rectangles) and an emissive :class:`Dome`. Moving rigid :class:`Primitive` objects
(spheres, boxes) carry a pose per frame. Shading is Lambertian under a directional :class:`Light`
with an ambient term and optional hard shadows cast by the primitives; colour is view-independent,
so every camera sees the same surface colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recapture.data.procedural.textures import Sky, Texture

__all__ = ["Dome", "Light", "Plane", "Primitive", "Scene", "axis_rotation"]


def axis_rotation(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotations ``(T, 3, 3)`` about a unit ``axis`` ``(3,)`` by ``angle`` ``(T,)`` radians."""
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + s * kx[None] + (1 - c) * (kx @ kx)[None]


@dataclass
class Plane:
    """A textured plane, infinite or a rectangle; seen from both sides.

    Texture coordinates of a point ``p`` are ``u = (p - origin) . u_axis`` and
    ``v = (p - origin) . v_axis``; ``bounds = (u_min, u_max, v_min, v_max)`` makes it a rectangle.

    Attributes:
        origin: ``(3,)`` a point on the plane.
        normal: ``(3,)`` unit normal (shading flips it towards the viewer).
        u_axis: ``(3,)`` texture u direction in the plane.
        v_axis: ``(3,)`` texture v direction in the plane.
        texture: albedo of ``(u, v)``.
        bounds: rectangle limits in texture coordinates, or None for an infinite plane.
    """

    origin: Tensor
    normal: Tensor
    u_axis: Tensor
    v_axis: Tensor
    texture: Texture
    bounds: tuple[float, float, float, float] | None = None


@dataclass
class Dome:
    """An emissive sphere of ``radius`` around ``centre`` closing the scene (cameras stay inside)."""

    radius: float
    sky: Sky
    centre: Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))


@dataclass
class Primitive:
    """A rigid textured object moving over the frames.

    Attributes:
        kind: ``"sphere"`` or ``"box"``.
        instance_id: segmentation id (>= 1).
        centres: ``(T, 3)`` world positions (float64).
        rotations: ``(T, 3, 3)`` world-from-object rotations (float64).
        size: sphere ``(1,)`` radius or box ``(3,)`` half extents.
        texture: albedo of the surface coordinates: ``(longitude, latitude)`` radians about the
            object's local z for spheres, the two in-face local coordinates (metres, in axis order)
            for box faces.
        motion: how it moves (metadata, e.g. ``"roll"``, ``"bounce"``).
    """

    kind: str
    instance_id: int
    centres: Tensor
    rotations: Tensor
    size: Tensor
    texture: Texture
    motion: str = ""

    @property
    def colours(self) -> Tensor:
        """The texture's colours ``(C, 3)`` (metadata)."""
        tex = self.texture
        if hasattr(tex, "colours"):
            return tex.colours
        return tex.colour[None]

    @property
    def bounding_radius(self) -> float:
        """Radius of a sphere around the centre enclosing the object."""
        return float(self.size[0]) if self.kind == "sphere" else float(self.size.norm())


@dataclass
class Light:
    """Directional light: ``direction`` ``(3,)`` unit vector towards the light; ``shadows`` from primitives."""

    direction: Tensor
    ambient: float = 0.4
    diffuse: float = 0.6
    shadows: bool = True


@dataclass
class Scene:
    """Static planes and dome plus moving primitives under one light, over ``num_frames`` frames.

    Attributes:
        num_frames: frames ``T`` every primitive has a pose for.
        seed: the seed the scene was sampled with (metadata).
        objects: moving primitives (instance ids 1..K).
        planes: static planes; on equal distance the earlier plane wins.
        light: the light.
        dome: the sky dome, or None (then rays that hit nothing get ``inf`` depth and
            ``miss_colour``).
        albedo_range: albedos are clamped to this range before lighting (a floor keeps lit
            colours away from black).
        miss_colour: ``(3,)`` colour of rays that hit nothing.
        meta: generator metadata (layout, texture names), not used for rendering.
    """

    num_frames: int
    seed: int
    objects: list[Primitive]
    planes: list[Plane]
    light: Light
    dome: Dome | None = None
    albedo_range: tuple[float, float] = (0.0, 1.0)
    miss_colour: Tensor = field(default_factory=lambda: torch.full((3,), 0.5, dtype=torch.float64))
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dome_radius(self) -> float:
        """Radius of the sky dome (``inf`` without one)."""
        return float("inf") if self.dome is None else float(self.dome.radius)
