"""Camera paths through procedural scenes: static, trajectory presets, random smooth paths.

A path starts from a base camera looking at the action from 5-9.5 m (walls, if any, behind the
action), with a 40-70 degree horizontal field of view. Moves come from
:func:`recapture.cameras.make_trajectory` (random preset, amount and easing, sometimes two composed)
scaled so 1 scene unit is the distance to the look-at point, or from a few random keyframes of the
eye and the look-at point joined by a Catmull-Rom spline (smooth, C1). Paths that would put the
camera inside an object, below the ground, behind a wall or outside the dome are redrawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from recapture.cameras import PRESETS, compose, intrinsics_from_fov, look_at, make_trajectory
from recapture.data.procedural.scene import Scene
from recapture.utils import RecaptureError

__all__ = [
    "CAMERA_MOTIONS",
    "PRESET_RANGES",
    "CameraPath",
    "path_is_clear",
    "relative_path",
    "sample_camera_path",
]

CAMERA_MOTIONS: tuple[str, ...] = ("static", "preset", "smooth")
PRESET_RANGES: dict[str, tuple[float, float]] = {
    "pan": (5.0, 25.0),  # degrees
    "tilt": (3.0, 12.0),
    "roll": (2.0, 8.0),
    "truck": (0.05, 0.3),  # scene units: fractions of the distance to the look-at point
    "pedestal": (0.03, 0.15),
    "dolly": (0.05, 0.3),
    "zoom": (0.1, 0.5),  # relative focal change (zoom out: -amount / (1 + amount))
    "orbit": (8.0, 40.0),
    "arc": (4.0, 15.0),
    "dolly_zoom": (0.1, 0.4),
}
"""Magnitude ranges of the preset moves (the sign is random); every preset of
:data:`recapture.cameras.PRESETS` has one."""
_UP = (0.0, 0.0, 1.0)


@dataclass
class CameraPath:
    """Per-frame cameras in a scene's world.

    Attributes:
        c2w: ``(T, 4, 4)`` float64 OpenCV camera-to-world poses.
        K: ``(T, 3, 3)`` float64 pixel intrinsics (zoom changes the focal length).
        name: what the move is, e.g. ``"orbit -23.1 (gradual, linear)"`` or ``"smooth 4 keys"``.
        scale: metres per scene unit (distance from the first camera to its look-at point).
    """

    c2w: Tensor
    K: Tensor
    name: str
    scale: float

    @property
    def num_frames(self) -> int:
        return int(self.c2w.shape[0])


def _catmull_rom(keys: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Uniform Catmull-Rom spline through ``keys`` ``(K, D)`` at key times ``linspace(0, 1, K)``: ``(T, D)``."""
    n = len(keys)
    pts = np.concatenate([2 * keys[:1] - keys[1:2], keys, 2 * keys[-1:] - keys[-2:-1]])  # end tangents
    x = np.clip(times, 0, 1) * (n - 1)
    i = np.minimum(np.floor(x).astype(int), n - 2)
    u = (x - i)[:, None]
    p0, p1, p2, p3 = pts[i], pts[i + 1], pts[i + 2], pts[i + 3]
    return 0.5 * (
        2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2 + (3 * p1 - p0 - 3 * p2 + p3) * u**3
    )


def _preset_move(
    g: np.random.Generator, num_frames: int, scale: float, K: Tensor
) -> tuple[Tensor, Tensor, str]:
    """A random preset (sometimes two composed) applied to intrinsics ``K`` ``(3, 3)`` or ``(T, 3, 3)``.

    Returns relative c2w ``(T, 4, 4)`` in metres (``scale`` metres per scene unit), K ``(T, 3, 3)``, name.
    """
    moves = []
    for k in range(1 if g.uniform() < 0.7 else 2):
        preset = str(g.choice(PRESETS))
        lo, hi = PRESET_RANGES[preset]
        amount = g.uniform(lo, hi) * (0.6 if k else 1.0)
        if g.uniform() < 0.5:
            amount = -amount / (1 + amount) if preset == "zoom" else -amount
        easing = str(g.choice(["linear", "ease_in_out"]))
        moves.append(make_trajectory(preset, float(amount), num_frames, easing=easing))  # type: ignore[arg-type]
    traj = compose(*moves).scaled(scale)
    return traj.c2w.double(), traj.intrinsics_for(K).double(), traj.name


def _smooth_move(
    g: np.random.Generator, num_frames: int, eye: np.ndarray, target: np.ndarray, K: Tensor
) -> tuple[Tensor, Tensor, str]:
    """Catmull-Rom path through random keyframes of the eye and the look-at point (first key = base)."""
    keys = int(g.integers(3, 5))
    c2w0 = look_at(torch.as_tensor(eye), torch.as_tensor(target), _UP).numpy()
    dist = float(np.linalg.norm(target - eye))
    offsets = g.uniform(-1, 1, (keys, 3)) * np.array([0.25, 0.1, 0.25]) * dist  # right, down, forward
    offsets[0] = 0
    eyes = eye[None] + offsets @ c2w0[:3, :3].T
    targets = target[None] + g.uniform(-0.8, 0.8, (keys, 3)) * np.array([1.0, 1.0, 0.5])
    targets[0] = target
    times = np.linspace(0, 1, num_frames) if num_frames > 1 else np.zeros(1)
    c2w = look_at(
        torch.as_tensor(_catmull_rom(eyes, times)), torch.as_tensor(_catmull_rom(targets, times)), _UP
    )
    focal = np.ones(num_frames)
    if g.uniform() < 0.3:  # a slow zoom along the way
        focal = _catmull_rom(np.append(1.0, g.uniform(0.85, 1.25, keys - 1))[:, None], times)[:, 0]
    Ks = K.double().expand(num_frames, 3, 3).clone()
    Ks[:, 0, 0] *= torch.as_tensor(focal)
    Ks[:, 1, 1] *= torch.as_tensor(focal)
    return c2w.double(), Ks, f"smooth {keys} keys"


def path_is_clear(scene: Scene, c2w: Tensor, margin: float = 0.4) -> bool:
    """Whether every camera centre of ``c2w`` ``(T, 4, 4)`` (frame t at scene frame t) is in free space.

    Free: above the ground (z > ``margin``), inside the dome, on the inner side of every bounded
    plane (walls) and at least ``margin`` outside every primitive's bounding sphere.
    """
    eye = c2w[:, :3, 3].double()
    if bool((eye[:, 2] < margin).any()):
        return False
    if scene.dome is not None and bool(
        ((eye - scene.dome.centre).norm(dim=-1) > scene.dome.radius - 2).any()
    ):
        return False
    for plane in scene.planes:
        if plane.bounds is not None and bool(((eye - plane.origin) @ plane.normal < margin).any()):
            return False
    frames = torch.arange(len(eye)).clamp(max=scene.num_frames - 1)
    for obj in scene.objects:
        if bool(((eye - obj.centres[frames]).norm(dim=-1) < obj.bounding_radius + margin).any()):
            return False
    return True


def sample_camera_path(
    scene: Scene,
    g: np.random.Generator,
    num_frames: int,
    size: tuple[int, int],
    motions: tuple[str, ...] = CAMERA_MOTIONS,
    weights: tuple[float, ...] | None = None,
) -> CameraPath:
    """Draw a source camera path through ``scene`` (module docstring).

    Args:
        scene: a scene from :func:`~recapture.data.procedural.sample_scene` (Z-up; its
            ``meta["view_azimuth"]`` orients the camera when there are walls).
        g: the random generator (the path is a function of its state).
        num_frames: frames ``T``.
        size: ``(H, W)`` of the images, for the intrinsics.
        motions: the kinds of moves to draw from (:data:`CAMERA_MOTIONS`).
        weights: their probabilities (default: static 0.15, preset 0.5, smooth 0.35, renormalised).

    Returns:
        A :class:`CameraPath` of ``T`` cameras.
    """
    unknown = [m for m in motions if m not in CAMERA_MOTIONS]
    if not motions or unknown:
        raise RecaptureError(f"motions={motions!r} must be a non-empty subset of {CAMERA_MOTIONS}")
    default = {"static": 0.15, "preset": 0.5, "smooth": 0.35}
    p = np.asarray(weights if weights is not None else [default[m] for m in motions], dtype=np.float64)
    if p.shape != (len(motions),) or (p < 0).any() or p.sum() <= 0:
        raise RecaptureError(f"weights={weights!r} must be {len(motions)} non-negative numbers, not all zero")
    height, width = size
    view = scene.meta.get("view_azimuth")
    for _attempt in range(30):
        target = np.array([g.uniform(-0.8, 0.8), g.uniform(-0.8, 0.8), g.uniform(0.3, 1.2)])
        dist = g.uniform(5.0, 9.5)
        az = (view + math.radians(g.uniform(-25, 25))) if view is not None else g.uniform(0, 2 * math.pi)
        el = math.radians(g.uniform(6, 35))
        eye = target + dist * np.array(
            [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
        )
        K = intrinsics_from_fov(float(g.uniform(40, 70)), height, width).double()
        c2w0 = look_at(torch.as_tensor(eye), torch.as_tensor(target), _UP).double()
        motion = str(g.choice(motions, p=p / p.sum()))
        if motion == "static":
            c2w, Ks, name = (
                c2w0.expand(num_frames, 4, 4).clone(),
                K.expand(num_frames, 3, 3).clone(),
                "static",
            )
        elif motion == "preset":
            rel, Ks, name = _preset_move(g, num_frames, dist, K)
            c2w = c2w0 @ rel
        else:
            c2w, Ks, name = _smooth_move(g, num_frames, eye, target, K)
        if path_is_clear(scene, c2w):
            return CameraPath(c2w, Ks, name, float(dist))
    # a high static camera is free in every scene this module's sampler makes
    eye = np.array([0.0, 0.0, 10.0]) + 12.0 * np.array([math.cos(view or 0.0), math.sin(view or 0.0), 0.0])
    c2w0 = look_at(torch.as_tensor(eye), torch.zeros(3, dtype=torch.float64), _UP).double()
    K = intrinsics_from_fov(60.0, height, width).double()
    return CameraPath(
        c2w0.expand(num_frames, 4, 4).clone(), K.expand(num_frames, 3, 3).clone(), "static", 15.6
    )


def relative_path(
    scene: Scene, source: CameraPath, g: np.random.Generator, tries: int = 30
) -> tuple[CameraPath, Tensor]:
    """A target path relative to ``source``: ``target.c2w[t] = source.c2w[t] @ relative[t]``.

    The relative move is a random preset (sometimes two composed; never static) in the source's
    scene units, like a ReCapture request ("orbit 20 degrees around what the video shows").

    Args:
        scene: the scene (for the free-space check).
        source: the source path.
        g: the random generator.
        tries: redraws before giving up on a free path (then the last draw is returned anyway).

    Returns:
        ``(target, relative_c2w)`` with ``relative_c2w`` ``(T, 4, 4)`` float64 in metres.
    """
    for _attempt in range(tries):
        rel, Ks, name = _preset_move(g, source.num_frames, source.scale, source.K)  # zooms compose
        target = CameraPath(source.c2w @ rel, Ks, name, source.scale)
        if path_is_clear(scene, target.c2w):
            break
    return target, rel
