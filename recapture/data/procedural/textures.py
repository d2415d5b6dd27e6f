"""Procedural textures: albedo as a function of 2D surface coordinates, and the emissive sky.

Every texture maps surface coordinates ``uv`` ``(M, 2)`` (metres on planes and box faces, radians
``(longitude, latitude)`` on spheres) to an albedo ``(M, 3)`` in [0, 1]. Box faces also pass the
axis of the face ``(M,)`` (0, 1, 2 = the object's local x, y, z), so a texture may treat top and
bottom faces differently. Colours are stored as ``(3,)`` / ``(C, 3)`` float64 tensors and cast to
the coordinates' dtype when evaluated, so float32 and float64 renders share one definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

__all__ = [
    "Bricks",
    "Checker",
    "Gradient",
    "Noise",
    "Plain",
    "Sky",
    "Stripes",
    "Texture",
    "Tiles",
    "Tinted",
    "cell_hash",
    "value_noise",
]


def cell_hash(i: Tensor, j: Tensor, salt: float = 0.0) -> Tensor:
    """Deterministic pseudo-random value in [0, 1) per integer cell ``(i, j)`` (same shape as ``i``)."""
    x = torch.sin(i * 12.9898 + j * 78.233 + salt) * 43758.5453
    return x - torch.floor(x)


def value_noise(uv: Tensor, octaves: int = 3, salt: float = 0.0) -> Tensor:
    """Fractal value noise in [0, 1] at ``uv`` ``(M, 2)`` (lattice spacing 1, halved per octave): ``(M,)``."""
    total = torch.zeros_like(uv[:, 0])
    weight, norm = 1.0, 0.0
    for octave in range(octaves):
        q = uv * (2.0**octave)
        cell = torch.floor(q)
        f = q - cell
        f = f * f * (3.0 - 2.0 * f)  # smoothstep: no creases at lattice lines
        i, j = cell[:, 0], cell[:, 1]
        s = salt + 17.0 * octave
        top = torch.lerp(cell_hash(i, j, s), cell_hash(i + 1, j, s), f[:, 0])
        bottom = torch.lerp(cell_hash(i, j + 1, s), cell_hash(i + 1, j + 1, s), f[:, 0])
        total = total + weight * torch.lerp(top, bottom, f[:, 1])
        norm += weight
        weight *= 0.5
    return total / norm


def _mix(colours: Tensor, w: Tensor) -> Tensor:
    """``lerp(colours[0], colours[1], w)`` for weights ``w`` ``(M,)``: ``(M, 3)``."""
    c = colours.to(w.dtype)
    return torch.lerp(c[0], c[1], w[:, None])


@dataclass
class Plain:
    """One colour ``(3,)``."""

    colour: Tensor

    def albedo(self, uv: Tensor, face: Tensor | None = None) -> Tensor:
        return self.colour.to(uv.dtype).expand(uv.shape[0], 3).clone()


@dataclass
class Checker:
    """Checkerboard of ``cell`` ``(du, dv)`` cells between ``colours[0]`` and ``colours[1]`` ``(2, 3)``.

    The blend weight is ``parity * contrast`` plus ``top_shift`` on faces with axis 2 (box tops and
    bottoms); ``jitter`` multiplies each cell's albedo by ``1 - jitter/2 + jitter * hash(cell)``.
    """

    colours: Tensor
    cell: tuple[float, float] = (1.0, 1.0)
    contrast: float = 1.0
    top_shift: float = 0.0
    jitter: float = 0.0
    salt: float = 0.0

    def albedo(self, uv: Tensor, face: Tensor | None = None) -> Tensor:
        i, j = torch.floor(uv[:, 0] / self.cell[0]), torch.floor(uv[:, 1] / self.cell[1])
        w = (i + j) % 2
        if self.contrast != 1.0:
            w = w * self.contrast
        if self.top_shift and face is not None:
            w = w + (face == 2) * self.top_shift
        out = _mix(self.colours, w)
        if self.jitter:
            out = out * (1.0 - self.jitter / 2 + self.jitter * cell_hash(i, j, self.salt))[:, None]
        return out


@dataclass
class Tiles:
    """Square tiles of ``cell`` metres, each a random blend of ``colours`` ``(2, 3)``, with grout lines.

    ``grout`` is the line width as a fraction of the cell; ``offset`` shifts every other row by that
    fraction of a tile (0.5 = running bond).
    """

    colours: Tensor
    grout_colour: Tensor
    cell: float = 0.5
    grout: float = 0.06
    offset: float = 0.0
    salt: float = 0.0

    def albedo(self, uv: Tensor, face: Tensor | None = None) -> Tensor:
        j = torch.floor(uv[:, 1] / self.cell)
        us = uv[:, 0] / self.cell + self.offset * (j % 2)
        i = torch.floor(us)
        line = ((us - i) < self.grout) | ((uv[:, 1] / self.cell - j) < self.grout)
        tile = _mix(self.colours, cell_hash(i, j, self.salt))
        return torch.where(line[:, None], self.grout_colour.to(uv.dtype).expand_as(tile), tile)


@dataclass
class Stripes:
    """Parallel stripes of ``period`` (coordinate units) at ``angle`` radians from the u axis.

    ``duty`` is the fraction of each period in ``colours[1]``.
    """

    colours: Tensor
    period: float = 0.5
    angle: float = 0.0
    duty: float = 0.5

    def albedo(self, uv: Tensor, face: Tensor | None = None) -> Tensor:
        s = (uv[:, 0] * math.cos(self.angle) + uv[:, 1] * math.sin(self.angle)) / self.period
        return _mix(self.colours, ((s - torch.floor(s)) < self.duty).to(uv.dtype))


@dataclass
class Noise:
    """Fractal value noise of feature size ``scale`` blending ``colours`` ``(2, 3)``."""

    colours: Tensor
    scale: float = 0.5
    octaves: int = 3
    salt: float = 0.0

    def albedo(self, uv: Tensor, face: Tensor | None = None) -> Tensor:
        return _mix(self.colours, value_noise(uv / self.scale, self.octaves, self.salt))


@dataclass
class Bricks:
    """Running-bond bricks of ``size`` ``(du, dv)`` with mortar lines, darker along v.

    Rows are ``floor(v / dv)``; odd rows shift by half a brick. ``mortar`` gives the line widths as
    fractions of ``(du, dv)``. Each brick's colour is ``brick * (jitter[0] + jitter[1] * hash)``
    times ``1 - fade_amount * clamp((v - fade_start) / fade_length, 0, 1)`` (mortar does not fade).
    """

    brick: Tensor
    mortar_colour: Tensor
    size: tuple[float, float] = (0.6, 0.3)
    mortar: tuple[float, float] = (0.045, 0.09)
    jitter: tuple[float, float] = (0.8, 0.35)
    fade_start: float = 0.0
    fade_length: float = 4.0
    fade_amount: float = 0.35
    salt: float = 0.0

    def albedo(self, uv: Tensor, face: Tensor | None = None) -> Tensor:
        row = torch.floor(uv[:, 1] / self.size[1])
        xs = uv[:, 0] / self.size[0] + 0.5 * (row % 2)
        col = torch.floor(xs)
        fy, fx = uv[:, 1] / self.size[1] - row, xs - col
        mortar = ((fy < self.mortar[1]) | (fx < self.mortar[0]))[:, None]
        jitter = self.jitter[0] + self.jitter[1] * cell_hash(row, col, self.salt)[:, None]
        height = ((uv[:, 1:2] - self.fade_start) / self.fade_length).clamp(0, 1)
        brick = self.brick.to(uv.dtype) * jitter * (1.0 - self.fade_amount * height)
        return torch.where(mortar, self.mortar_colour.to(uv.dtype).expand_as(brick), brick)


@dataclass
class Gradient:
    """Linear blend of ``colours`` ``(2, 3)`` along coordinate ``axis`` (0 = u, 1 = v) from ``start`` over ``length``."""

    colours: Tensor
    axis: int = 1
    start: float = 0.0
    length: float = 1.0

    def albedo(self, uv: Tensor, face: Tensor | None = None) -> Tensor:
        return _mix(self.colours, ((uv[:, self.axis] - self.start) / self.length).clamp(0, 1))


@dataclass
class Tinted:
    """``base`` multiplied by a colour ramp: ``lerp(colours[0], colours[1], clamp((uv[axis] - start) / length))``."""

    base: Texture
    colours: Tensor
    axis: int = 0
    start: float = 0.0
    length: float = 1.0

    def albedo(self, uv: Tensor, face: Tensor | None = None) -> Tensor:
        w = ((uv[:, self.axis : self.axis + 1] - self.start) / self.length).clamp(0, 1)
        c = self.colours.to(uv.dtype)
        return self.base.albedo(uv, face) * torch.lerp(c[0], c[1], w)


Texture = Union[Plain, Checker, Tiles, Stripes, Noise, Bricks, Gradient, Tinted]


@dataclass
class Sky:
    """Emissive sky on the dome: horizon-to-zenith gradient, optional azimuth stripes and clouds.

    Attributes:
        horizon: ``(3,)`` colour at elevation 0 (and below).
        zenith: ``(3,)`` colour straight up (world +z).
        stripes: brightness modulation of ``stripe_deg``-wide azimuth stripes (0 = none); the
            colour is multiplied by ``1 - stripes`` on even stripes.
        stripe_deg: stripe width in degrees.
        clouds: cloud cover in [0, 1] (0 = clear sky).
        cloud_colour: ``(3,)``.
        cloud_scale: feature size of the clouds on the plane ``z = 1`` above the viewer.
        salt: noise variant.
    """

    horizon: Tensor
    zenith: Tensor
    stripes: float = 0.0
    stripe_deg: float = 15.0
    clouds: float = 0.0
    cloud_colour: Tensor | None = None
    cloud_scale: float = 0.4
    salt: float = 0.0

    def radiance(self, direction: Tensor) -> Tensor:
        """Colour ``(M, 3)`` seen along unit world directions ``(M, 3)`` from the dome centre."""
        dt = direction.dtype
        elev = torch.asin(direction[:, 2].clamp(0, 1)) / (math.pi / 2)
        out = torch.lerp(self.horizon.to(dt), self.zenith.to(dt), elev[:, None])
        if self.stripes:
            band = (
                torch.floor(torch.atan2(direction[:, 1], direction[:, 0]) / math.radians(self.stripe_deg)) % 2
            )
            out = out * ((1.0 - self.stripes) + self.stripes * band)[:, None]
        if self.clouds > 0:
            # clouds on a plane above the viewer: perspective makes them shrink towards the horizon
            up = direction[:, 2].clamp_min(0.0)
            uv = direction[:, :2] / (up[:, None] + 0.15) / self.cloud_scale
            n = value_noise(uv, 4, self.salt)
            edge = 1.0 - self.clouds
            cover = ((n - edge) / 0.15).clamp(0, 1) * (up / 0.1).clamp(0, 1)
            white = self.cloud_colour if self.cloud_colour is not None else torch.ones(3)
            out = torch.lerp(out, white.to(dt).expand_as(out), cover[:, None])
        return out
