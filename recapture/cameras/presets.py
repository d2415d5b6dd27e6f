"""Preset camera moves: the registry (:data:`PRESETS`, :func:`register_preset`) and the built-in moves.

A preset is a function ``fn(s, amount, pivot_depth) -> (c2w, focal_scale, pivot)`` of the ``(T,)``
progress ``s`` in [0, 1] (:func:`recapture.cameras.trajectory.progress`);
:func:`recapture.cameras.trajectory.make_trajectory` turns it into a :class:`Trajectory`.
Rotations are in degrees, translations in scene units (1 = the scene's median depth).

Presets (``make_trajectory(preset, amount, ...)``; ``d`` is ``pivot_depth``):

==============  ===========  ============================================================
preset          amount unit  positive amount means
==============  ===========  ============================================================
``pan``         degrees      the camera turns right (yaw about its y axis; centre fixed)
``tilt``        degrees      the camera looks up (pitch about its x axis; centre fixed)
``roll``        degrees      the picture turns clockwise: in the rendered image the scene
                             rotates clockwise about the image centre (a point right of the
                             centre moves down). The camera itself turns counter-clockwise
                             about its optical axis as seen from behind it (left side down)
``truck``       scene units  the camera moves right (+x)
``pedestal``    scene units  the camera moves up (-y)
``dolly``       scene units  the camera moves forward (+z)
``zoom``        relative     zoom in: focal x (1 + amount) at the end (> -1; negative = out)
``orbit``       degrees      the camera moves right on a circle around the pivot
                             ``(0, 0, d)`` on its optical axis, always looking at it
``arc``         degrees      the camera moves up on a vertical circle around the pivot,
                             looking at it (orbit in elevation)
``dolly_zoom``  scene units  dolly forward by ``amount`` (< d) while the focal length scales
                             by ``(d - z) / d`` so the plane at depth ``d`` keeps its size
==============  ===========  ============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from recapture.cameras.poses import make_pose, rotation_x, rotation_y, rotation_z
from recapture.cameras.spec import document_presets
from recapture.utils import RecaptureError

__all__ = ["PRESETS", "PRESET_MOVES", "Move", "PresetMove", "register_preset", "unregister_preset"]

Move = tuple[Tensor, Tensor | None, Tensor | None]  # (c2w (T, 4, 4), focal_scale (T,) or None, pivot (3,) or None)
PresetMove = Callable[[Tensor, float, float], Move]
PRESET_MOVES: dict[str, PresetMove] = {}


class _PresetNames(Sequence[str]):
    """The registered preset names in registration order: a live, read-only view of :data:`PRESET_MOVES`."""

    def __getitem__(self, index):  # type: ignore[override]  # int -> str, slice -> tuple
        return tuple(PRESET_MOVES)[index]

    def __len__(self) -> int:
        return len(PRESET_MOVES)

    def __contains__(self, name: object) -> bool:
        return name in PRESET_MOVES

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(PRESET_MOVES))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # mutable view

    def __repr__(self) -> str:
        return repr(tuple(PRESET_MOVES))


PRESETS: Sequence[str] = _PresetNames()
"""The preset names (``pan``, ``tilt``, ...): whatever :func:`register_preset` registered, in order."""


def register_preset(name: str) -> Callable[[PresetMove], PresetMove]:
    """Register ``fn(s, amount, pivot_depth) -> (c2w, focal_scale, pivot)`` as the preset ``name``.

    ``s`` is the ``(T,)`` float64 progress in [0, 1] (:func:`~recapture.cameras.trajectory.progress`), ``amount`` the user's amount
    and ``pivot_depth`` (> 0, scene units) the depth of the pivot. A new preset is one such function:
    :data:`PRESETS`, :func:`~recapture.cameras.trajectory.make_trajectory`, ``TrajectorySpec(preset=name)`` (and so
    ``--data.trajectory.preset`` / ``recapture trajectory --trajectory.preset``) and their
    ``--help`` pick it up.
    """

    def add(fn: PresetMove) -> PresetMove:
        PRESET_MOVES[name] = fn
        document_presets(PRESETS)
        return fn

    return add


def unregister_preset(name: str) -> PresetMove:
    """Remove the preset ``name`` (registered by :func:`register_preset`) and return its function."""
    if name not in PRESET_MOVES:
        raise RecaptureError(f"unknown trajectory preset {name!r}; choose one of {', '.join(PRESETS)}.")
    fn = PRESET_MOVES.pop(name)
    document_presets(PRESETS)
    return fn


def _orbit_pose(rotation: Tensor, pivot_depth: float) -> Tensor:
    """Camera with orientation ``rotation`` looking at the pivot ``(0, 0, d)`` from distance ``d``."""
    forward = rotation[..., :, 2]
    pivot = torch.tensor([0.0, 0.0, pivot_depth], dtype=rotation.dtype)
    return make_pose(rotation, pivot - pivot_depth * forward)


def _still(s: Tensor) -> Tensor:
    return make_pose(translation=torch.zeros(s.numel(), 3, dtype=torch.float64))


@register_preset("pan")
def _pan(s: Tensor, amount: float, d: float) -> Move:
    return make_pose(rotation_y(torch.deg2rad(amount * s))), None, None


@register_preset("tilt")
def _tilt(s: Tensor, amount: float, d: float) -> Move:
    return make_pose(rotation_x(torch.deg2rad(amount * s))), None, None


@register_preset("roll")
def _roll(s: Tensor, amount: float, d: float) -> Move:  # the camera turns the opposite way to the picture
    return make_pose(rotation_z(-torch.deg2rad(amount * s))), None, None


def _slide(s: Tensor, axis: int, distance: float) -> Tensor:
    trans = torch.zeros(s.numel(), 3, dtype=torch.float64)
    trans[:, axis] = distance * s
    return make_pose(translation=trans)


@register_preset("truck")
def _truck(s: Tensor, amount: float, d: float) -> Move:
    return _slide(s, 0, amount), None, None


@register_preset("pedestal")
def _pedestal(s: Tensor, amount: float, d: float) -> Move:
    return _slide(s, 1, -amount), None, None  # up is -y in OpenCV axes


@register_preset("dolly")
def _dolly(s: Tensor, amount: float, d: float) -> Move:
    return _slide(s, 2, amount), None, None


@register_preset("zoom")
def _zoom(s: Tensor, amount: float, d: float) -> Move:
    if amount <= -1:
        raise RecaptureError(f"zoom amount must be > -1 (focal x (1 + amount)), got {amount}; try -0.5 to zoom out.")
    return _still(s), 1.0 + amount * s, None


@register_preset("orbit")
def _orbit(s: Tensor, amount: float, d: float) -> Move:  # turn opposite to the motion: the pivot stays centred
    return _orbit_pose(rotation_y(-torch.deg2rad(amount * s)), d), None, torch.tensor([0.0, 0.0, d])


@register_preset("arc")
def _arc(s: Tensor, amount: float, d: float) -> Move:
    return _orbit_pose(rotation_x(-torch.deg2rad(amount * s)), d), None, torch.tensor([0.0, 0.0, d])


@register_preset("dolly_zoom")
def _dolly_zoom(s: Tensor, amount: float, d: float) -> Move:
    if amount >= d:
        raise RecaptureError(f"dolly_zoom amount {amount} would reach the plane at pivot_depth={d}; use an amount < {d}.")
    return _slide(s, 2, amount), (d - amount * s) / d, torch.tensor([0.0, 0.0, d])
