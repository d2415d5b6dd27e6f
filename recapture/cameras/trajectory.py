"""Camera trajectories: the :class:`Trajectory` container, preset moves, composition and keyframes.

A trajectory is a ``(T, 4, 4)`` sequence of OpenCV camera-to-world poses **relative to the source
camera of each frame**: ``c2w[t]`` is the new camera expressed in the coordinates of the camera that
filmed frame ``t`` (x right, y down, z forward). For a static source camera this is simply the new
camera's pose; the anchor stage composes it with the source poses when they move.

Units. Rotations are in degrees. Translations are in **scene units**: 1 = the scene's median depth,
so ``truck 0.2`` moves the camera by a fifth of the typical distance to the scene on any video. The
anchor stage converts with :meth:`Trajectory.scaled` (times the median depth in depth units).

Presets (``make_trajectory(preset, amount, ...)``): the sign table, the registry and the built-in
moves are in :mod:`recapture.cameras.presets` (:func:`register_preset` adds one).

Timing: ``mode="gradual"`` goes from the source pose (frame 0) to the target (last frame);
``mode="direct"`` uses the target pose for every frame. ``easing`` shapes the gradual progress:
``"linear"`` or ``"ease_in_out"`` (``(1 - cos(pi u)) / 2``: starts and stops smoothly).
:func:`compose` chains moves per frame (each move acts in the camera frame produced by the previous
ones: orbit then dolly moves towards the pivot); :func:`from_keyframes` interpolates key poses.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from recapture.cameras.poses import (
    as_float,
    as_number_tensor,
    lerp_keyframes,
    sample_keyframes,
    uniform_times,
)
from recapture.cameras.presets import PRESET_MOVES, PRESETS, register_preset, unregister_preset
from recapture.utils import RecaptureError

__all__ = ["PRESETS", "PRESET_MOVES", "Trajectory", "check_focal_scale", "check_pivot", "compose", "ease", "from_keyframes",
           "make_trajectory", "progress", "register_preset", "unregister_preset"]

log = logging.getLogger(__name__)

Mode = Literal["gradual", "direct"]
Easing = Literal["linear", "ease_in_out"]


@dataclass
class Trajectory:
    """A camera trajectory relative to the source camera of each frame.

    Args:
        c2w: ``(T, 4, 4)`` OpenCV camera-to-world poses in the source camera's frame (stored float32).
        intrinsics: absolute ``(T, 3, 3)`` (or ``(3, 3)``, expanded) pixel intrinsics when known,
            e.g. from a file; None means "the source video's K", modified by ``focal_scale``.
        focal_scale: ``(T,)`` focal-length multipliers from zoom presets (None = all ones).
        name: human-readable description.
        pivot: ``(3,)`` look-at point in source-camera coordinates (scene units) for orbit/arc
            presets, used by previews; None when the move has none.
    """

    c2w: Tensor
    intrinsics: Tensor | None = None
    focal_scale: Tensor | None = None
    name: str = ""
    pivot: Tensor | None = None

    def __post_init__(self) -> None:
        c2w = as_number_tensor(self.c2w, "Trajectory.c2w", "a (T, 4, 4) array of numbers")
        if c2w.ndim != 3 or tuple(c2w.shape[-2:]) != (4, 4) or c2w.shape[0] < 1:
            raise RecaptureError(f"Trajectory.c2w must have shape (T, 4, 4) with T >= 1, got {tuple(c2w.shape)}.")
        self.c2w = c2w.float()
        t = c2w.shape[0]
        if self.intrinsics is not None:
            what = "a (3, 3) or (T, 3, 3) array of numbers"
            k = as_number_tensor(self.intrinsics, "Trajectory.intrinsics", what).float()
            if k.shape == (3, 3):
                k = k.expand(t, 3, 3).clone()
            if tuple(k.shape) != (t, 3, 3):
                raise RecaptureError(
                    f"Trajectory.intrinsics must be (3, 3) or ({t}, 3, 3) to match {t} poses, got {tuple(k.shape)}."
                )
            self.intrinsics = k
        if self.focal_scale is not None:
            self.focal_scale = check_focal_scale(self.focal_scale, t, "Trajectory.focal_scale")
        if self.pivot is not None:
            self.pivot = check_pivot(self.pivot, "Trajectory.pivot")
        if not isinstance(self.name, str):
            raise RecaptureError(f"Trajectory.name must be a string, got {self.name!r}.")

    @property
    def num_frames(self) -> int:
        """Number of poses ``T``."""
        return int(self.c2w.shape[0])

    def intrinsics_for(self, K: Tensor) -> Tensor:
        """Per-frame intrinsics: this trajectory's own, or ``K`` with fx, fy (and skew) times ``focal_scale``.

        Zoom keeps the principal point fixed, so only the first two entries of row 0 and the
        second of row 1 scale.

        Args:
            K: ``(3, 3)`` or ``(T, 3, 3)`` source intrinsics in pixels (ignored when the
                trajectory carries absolute intrinsics).

        Returns:
            ``(T, 3, 3)`` float32.
        """
        if self.intrinsics is not None:
            return self.intrinsics.clone()
        K = torch.as_tensor(K).float()
        t = self.num_frames
        if K.shape == (3, 3):
            K = K.expand(t, 3, 3)
        if tuple(K.shape) != (t, 3, 3):
            raise RecaptureError(f"K must be (3, 3) or ({t}, 3, 3) for a {t}-frame trajectory, got {tuple(K.shape)}.")
        K = K.clone()
        if self.focal_scale is not None:
            s = self.focal_scale.to(K.device)
            K[:, 0, 0] *= s
            K[:, 0, 1] *= s
            K[:, 1, 1] *= s
        return K

    def scaled(self, scene_scale: float) -> Trajectory:
        """Multiply translations (and the pivot) by ``scene_scale``: scene units -> depth units.

        Args:
            scene_scale: depth units per scene unit, typically the median depth of the source video.

        Returns:
            A new :class:`Trajectory`; rotations, intrinsics and focal scales are unchanged.
        """
        s = float(scene_scale)
        if not math.isfinite(s) or s <= 0:
            raise RecaptureError(f"scene_scale must be finite and > 0 (e.g. the median depth), got {scene_scale}.")
        c2w = self.c2w.clone()
        c2w[:, :3, 3] *= s
        return replace(self, c2w=c2w, pivot=None if self.pivot is None else self.pivot * s)

    def resample(self, num_frames: int) -> Trajectory:
        """Resample to ``num_frames`` poses at uniform times (slerp + linear translation), with a notice.

        Args:
            num_frames: target length ``N >= 1``.

        Returns:
            A new :class:`Trajectory` of ``N`` frames (``self`` when the length already matches).
        """
        n = int(num_frames)
        if n < 1:
            raise RecaptureError(f"num_frames must be >= 1, got {num_frames}.")
        if n == self.num_frames:
            return self
        log.warning(
            "trajectory %r has %d poses but %d frames are needed: resampling it (SE(3) interpolation).",
            self.name, self.num_frames, n,
        )
        times = uniform_times(n)
        c2w = sample_keyframes(uniform_times(self.num_frames), self.c2w, times)
        return replace(
            self,
            c2w=c2w,
            intrinsics=None if self.intrinsics is None else lerp_keyframes(self.intrinsics, times),
            focal_scale=None if self.focal_scale is None else lerp_keyframes(self.focal_scale, times),
        )

    def to(self, device: torch.device | str | None = None) -> Trajectory:
        """Move every tensor to ``device``."""
        def mv(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device)

        return replace(self, c2w=self.c2w.to(device), intrinsics=mv(self.intrinsics),
                       focal_scale=mv(self.focal_scale), pivot=mv(self.pivot))


def check_focal_scale(value: object, num_frames: int, name: str = "focal_scale") -> Tensor:
    """Per-frame zoom multipliers as a ``(T,)`` float32 tensor, or a :class:`RecaptureError` naming ``name``.

    Args:
        value: ``T`` finite numbers > 0 (a list, an array or a tensor).
        num_frames: ``T``, the number of poses.
        name: what the value is (``"traj.json: 'focal_scale'"``), used in messages.

    Returns:
        ``(T,)`` float32.
    """
    what = f"a list of {num_frames} numbers (one focal multiplier per pose)"
    f = as_number_tensor(value, name, what).float()
    if f.ndim != 1 or f.shape[0] != num_frames:
        raise RecaptureError(f"{name} must be {what}, got shape {tuple(f.shape)}.")
    if not bool(torch.isfinite(f).all()) or bool((f <= 0).any()):
        raise RecaptureError(f"{name} must be finite and > 0, got {f.tolist()}.")
    return f


def check_pivot(value: object, name: str = "pivot") -> Tensor:
    """An orbit/arc look-at point as a ``(3,)`` float32 tensor, or a :class:`RecaptureError` naming ``name``.

    Args:
        value: ``[x, y, z]`` in source-camera coordinates, scene units (a list, an array or a tensor).
        name: what the value is (``"traj.json: 'pivot'"``), used in messages.

    Returns:
        ``(3,)`` float32.
    """
    what = "3 numbers [x, y, z] (the look-at point in source-camera coordinates)"
    p = as_number_tensor(value, name, what).float()
    if p.numel() != 3 or p.ndim > 2:
        raise RecaptureError(
            f"{name} must be {what}, got {p.tolist()}; give all three coordinates (or no pivot)."
        )
    p = p.reshape(3)
    if not bool(torch.isfinite(p).all()):
        raise RecaptureError(f"{name} must be finite, got {p.tolist()}.")
    return p


def ease(u: Tensor, easing: Easing = "ease_in_out") -> Tensor:
    """Map linear progress ``u`` in [0, 1] through an easing curve.

    Args:
        u: ``(T,)`` progress.
        easing: ``"linear"`` (identity) or ``"ease_in_out"`` (``(1 - cos(pi u)) / 2``).

    Returns:
        ``(T,)`` eased progress, 0 -> 0 and 1 -> 1.
    """
    if easing == "linear":
        return u
    if easing == "ease_in_out":
        return (1.0 - torch.cos(math.pi * u)) / 2.0
    raise RecaptureError(f"easing must be 'linear' or 'ease_in_out', got {easing!r}.")


def progress(num_frames: int, mode: Mode = "gradual", easing: Easing = "ease_in_out") -> Tensor:
    """Fraction of the move reached at each frame.

    Args:
        num_frames: ``T >= 1``.
        mode: ``"gradual"`` (0 at the first frame, 1 at the last; a single frame gets 1) or
            ``"direct"`` (1 everywhere).
        easing: see :func:`ease`.

    Returns:
        ``(T,)`` float64 in [0, 1].
    """
    if int(num_frames) < 1:
        raise RecaptureError(f"num_frames must be >= 1, got {num_frames}.")
    if mode == "direct":
        ease(torch.zeros(1, dtype=torch.float64), easing)  # validates the easing name
        return torch.ones(int(num_frames), dtype=torch.float64)
    if mode != "gradual":
        raise RecaptureError(f"mode must be 'gradual' or 'direct', got {mode!r}.")
    if int(num_frames) == 1:
        return torch.ones(1, dtype=torch.float64)
    return ease(torch.linspace(0.0, 1.0, int(num_frames), dtype=torch.float64), easing)


def make_trajectory(
    preset: str,
    amount: float,
    num_frames: int,
    mode: Mode = "gradual",
    easing: Easing = "ease_in_out",
    pivot_depth: float = 1.0,
) -> Trajectory:
    """Build a preset camera move (see the table in :mod:`recapture.cameras.presets` for signs and units).

    Args:
        preset: one of :data:`PRESETS` (the registered moves, :func:`register_preset`).
        amount: degrees (pan, tilt, roll, orbit, arc), scene units (truck, pedestal, dolly,
            dolly_zoom) or relative focal change (zoom: 0.5 -> x1.5 at the end; > -1).
        num_frames: ``T >= 1``.
        mode: ``"gradual"`` or ``"direct"``.
        easing: ``"linear"`` or ``"ease_in_out"``.
        pivot_depth: depth of the orbit/arc pivot and of the dolly-zoom plane, in scene units (> 0).

    Returns:
        A :class:`Trajectory` of ``T`` poses starting at the identity in gradual mode.

    Example:
        >>> traj = make_trajectory("orbit", 20.0, 14)
        >>> traj.c2w.shape, traj.c2w[0].allclose(torch.eye(4))
        (torch.Size([14, 4, 4]), True)
    """
    if preset not in PRESET_MOVES:
        raise RecaptureError(f"unknown trajectory preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    amount = as_float(amount, f"trajectory amount ({preset})")
    d = as_float(pivot_depth, "pivot_depth")
    if d <= 0:
        raise RecaptureError(f"pivot_depth must be > 0 scene units (1 = median depth), got {pivot_depth}.")
    c2w, focal_scale, pivot = PRESET_MOVES[preset](progress(num_frames, mode, easing), amount, d)
    name = f"{preset} {amount:g}" + (f" ({mode}, {easing})" if mode == "gradual" else " (direct)")
    return Trajectory(c2w=c2w.float(), focal_scale=focal_scale, name=name, pivot=pivot)


def compose(*trajectories: Trajectory) -> Trajectory:
    """Chain moves per frame: ``c2w[t] = c2w_1[t] @ c2w_2[t] @ ...``; focal scales multiply.

    Each move acts in the camera frame produced by the moves before it (orbit then dolly moves
    along the orbited camera's optical axis, i.e. towards the pivot).

    Args:
        *trajectories: one or more :class:`Trajectory` with the same number of frames; at most one
            may carry absolute intrinsics.

    Returns:
        The composed :class:`Trajectory`.
    """
    if not trajectories:
        raise RecaptureError("compose needs at least one trajectory.")
    lengths = [tr.num_frames for tr in trajectories]
    if len(set(lengths)) != 1:
        raise RecaptureError(f"compose needs trajectories of equal length, got {lengths}; resample them first.")
    with_k = [tr.name for tr in trajectories if tr.intrinsics is not None]
    if len(with_k) > 1:
        raise RecaptureError(f"only one composed trajectory may carry absolute intrinsics, got {with_k}.")
    c2w = trajectories[0].c2w.double()
    pivot = trajectories[0].pivot
    focal = trajectories[0].focal_scale
    for tr in trajectories[1:]:
        if pivot is None and tr.pivot is not None:
            pivot = (c2w[-1] @ torch.cat([tr.pivot.double(), torch.ones(1, dtype=torch.float64)]))[:3].float()
        c2w = c2w @ tr.c2w.double()
        if tr.focal_scale is not None:
            focal = tr.focal_scale if focal is None else focal * tr.focal_scale
    intrinsics = next((tr.intrinsics for tr in trajectories if tr.intrinsics is not None), None)
    return Trajectory(
        c2w=c2w.float(), intrinsics=intrinsics, focal_scale=focal,
        name=" + ".join(tr.name for tr in trajectories if tr.name), pivot=pivot,
    )


def from_keyframes(
    times: Tensor | list[float],
    poses: Tensor,
    num_frames: int,
    easing: Easing = "linear",
    focal_scales: Tensor | list[float] | None = None,
    name: str = "keyframes",
) -> Trajectory:
    """Interpolate key poses (slerp + linear translation) into a ``num_frames`` trajectory.

    Args:
        times: ``(K,)`` strictly increasing key times in [0, 1] (0 = first frame, 1 = last);
            frames before the first / after the last key hold that key's pose.
        poses: ``(K, 4, 4)`` OpenCV camera-to-world key poses relative to the source camera.
        num_frames: ``T >= 1`` output frames.
        easing: applied to the global time before interpolation (``"ease_in_out"`` starts and
            ends the whole path smoothly without stopping at intermediate keys).
        focal_scales: optional ``(K,)`` focal multipliers at the keys (linearly interpolated).
        name: description stored on the trajectory.

    Returns:
        A :class:`Trajectory` of ``T`` poses.
    """
    key_t = as_number_tensor(times, "keyframe times", "a list of numbers").double().reshape(-1)
    poses = as_number_tensor(poses, "keyframe poses", "a (K, 4, 4) array of numbers")
    if poses.ndim != 3 or tuple(poses.shape[1:]) != (4, 4) or poses.shape[0] != key_t.numel():
        raise RecaptureError(
            f"poses must have shape (K, 4, 4) with K = len(times) = {key_t.numel()}, got {tuple(poses.shape)}."
        )
    if key_t.numel() == 0:
        raise RecaptureError("from_keyframes needs at least one keyframe.")
    if bool((key_t < 0).any()) or bool((key_t > 1).any()):
        raise RecaptureError(
            f"keyframe times must be in [0, 1] (fractions of the clip), got {key_t.tolist()}; "
            "divide frame indices by (num_frames - 1)."
        )
    if key_t.numel() > 1 and not bool((key_t[1:] > key_t[:-1]).all()):
        raise RecaptureError(f"keyframe times must be strictly increasing, got {key_t.tolist()}.")
    if int(num_frames) < 1:
        raise RecaptureError(f"num_frames must be >= 1, got {num_frames}.")
    u = ease(uniform_times(int(num_frames)), easing)
    c2w = sample_keyframes(key_t, poses.float(), u)
    focal = None
    if focal_scales is not None:
        fs = as_number_tensor(focal_scales, "focal_scales", "a list of numbers").double().reshape(-1)
        if fs.numel() != key_t.numel():
            raise RecaptureError(f"focal_scales needs {key_t.numel()} values (one per key), got {fs.numel()}.")
        focal = lerp_keyframes(fs, u, key_t).float()
    return Trajectory(c2w=c2w, focal_scale=focal, name=name)

