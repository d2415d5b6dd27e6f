"""Rigid-pose algebra: elementary rotations, quaternions, SE(3) inverse and interpolation.

Also the input checks every camera module shares: :func:`check_poses`, :func:`as_number_tensor`
(nested lists from files and configs) and :func:`as_float` (scalars).

Every pose is a ``(..., 4, 4)`` homogeneous matrix ``[[R, t], [0, 1]]``. Quaternions are ``(..., 4)``
in ``(w, x, y, z)`` order (scalar first, as COLMAP and Kubric write them). Angles are radians here;
the user-facing presets in :mod:`recapture.cameras.trajectory` take degrees.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recapture.utils import RecaptureError

__all__ = [
    "as_float",
    "as_number_tensor",
    "check_poses",
    "interpolate_poses",
    "lerp_keyframes",
    "invert_pose",
    "make_pose",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "rotation_angle",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "sample_keyframes",
    "slerp_quaternions",
    "uniform_times",
]


def check_poses(pose: Tensor, name: str = "pose") -> None:
    """Raise :class:`RecaptureError` unless ``pose`` is a floating tensor of shape ``(..., 4, 4)``."""
    if not isinstance(pose, Tensor):
        raise RecaptureError(f"{name} must be a torch.Tensor of shape (..., 4, 4), got {type(pose).__name__}.")
    if pose.ndim < 2 or tuple(pose.shape[-2:]) != (4, 4):
        raise RecaptureError(f"{name} must have shape (..., 4, 4), got {tuple(pose.shape)}.")
    if not pose.is_floating_point():
        raise RecaptureError(f"{name} must be a floating tensor, got dtype {pose.dtype}; call .float() first.")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    if isinstance(value, (Tensor, np.ndarray)):
        if value.ndim > 1:
            return f"an array of shape {tuple(value.shape)}"
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(x: Any) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, Tensor):
        return x.ndim == 0 and not x.is_complex() and x.dtype != torch.bool
    return isinstance(x, numbers.Real)


def _all_numbers(value: Any) -> bool:
    """True when ``value`` is a number or (nested) lists / tuples whose leaves are all numbers."""
    stack = [value]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        elif not _is_number(x):
            return False
    return True


def as_number_tensor(value: Any, name: str, expected: str) -> Tensor:
    """Numbers from a file or a caller (nested lists, an array or a tensor) as a floating tensor.

    Strings, booleans, ``None`` entries and ragged lists raise one :class:`RecaptureError` that
    names ``name``, the value and the ``expected`` layout; shapes are the caller's to check.

    Args:
        value: nested lists / tuples of numbers, a numeric ``np.ndarray`` or a ``torch.Tensor``.
        name: what the value is, e.g. ``"traj.json: 'intrinsics'"``.
        expected: the layout in words, e.g. ``"a 3 x 3 list of numbers"``.

    Returns:
        a float64 tensor for lists and arrays; tensors keep their floating dtype and device.
    """
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise RecaptureError(f"{name} must be {expected}, got a {value.dtype} tensor.")
        return value if value.is_floating_point() else value.double()
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        return torch.from_numpy(np.asarray(value, dtype=np.float64))
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not _all_numbers(value):
        raise RecaptureError(
            f"{name} must be {expected}, got {_short(value)}; use plain numbers (no quotes, no nulls)."
        )
    try:
        return torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise RecaptureError(
            f"{name} must be {expected}, got a ragged list {_short(value)}; give every row the same length."
        ) from err


def as_float(value: Any, name: str) -> float:
    """A finite scalar (number, numeric string or one-element tensor), else a :class:`RecaptureError`.

    Args:
        value: the scalar.
        name: what it is, e.g. ``"TrajectorySpec.amount"``.

    Returns:
        ``float(value)``.
    """
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, Tensor) and value.numel() != 1):
        raise RecaptureError(f"{name} must be a number, got {_short(value)}.")
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise RecaptureError(f"{name} must be a number, got {_short(value)}.") from err
    if not math.isfinite(out):
        raise RecaptureError(f"{name} must be finite, got {_short(value)}.")
    return out


def _as_angle(angle: Tensor | float, like: Tensor | None = None) -> Tensor:
    if isinstance(angle, Tensor):
        return angle if angle.is_floating_point() else angle.float()
    dtype = like.dtype if like is not None else torch.float32
    return torch.tensor(float(angle), dtype=dtype)


def _axis_rotation(angle: Tensor | float, axis: int) -> Tensor:
    a = _as_angle(angle)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    if axis == 0:
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == 1:
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    else:
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def rotation_x(angle: Tensor | float) -> Tensor:
    """Right-handed rotation about +x by ``angle`` radians.

    Args:
        angle: scalar or ``(...)`` radians.

    Returns:
        ``(..., 3, 3)``. In OpenCV camera axes a positive angle turns the optical axis (+z) towards
        -y, i.e. the camera looks **up**.
    """
    return _axis_rotation(angle, 0)


def rotation_y(angle: Tensor | float) -> Tensor:
    """Right-handed rotation about +y by ``angle`` radians.

    Args:
        angle: scalar or ``(...)`` radians.

    Returns:
        ``(..., 3, 3)``. In OpenCV camera axes a positive angle turns the optical axis (+z) towards
        +x, i.e. the camera looks **right**.
    """
    return _axis_rotation(angle, 1)


def rotation_z(angle: Tensor | float) -> Tensor:
    """Right-handed rotation about +z by ``angle`` radians.

    Args:
        angle: scalar or ``(...)`` radians.

    Returns:
        ``(..., 3, 3)``. In OpenCV camera axes a positive angle turns the camera's right axis (+x)
        towards +y (down): seen from behind the camera this is a clockwise turn of the camera.
    """
    return _axis_rotation(angle, 2)


def make_pose(rotation: Tensor | None = None, translation: Tensor | None = None) -> Tensor:
    """Assemble ``(..., 4, 4)`` poses from rotations and translations.

    Args:
        rotation: ``(..., 3, 3)`` or None (identity).
        translation: ``(..., 3)`` or None (zero).

    Returns:
        ``(..., 4, 4)`` with the batch shape broadcast from both inputs.
    """
    if rotation is None and translation is None:
        return torch.eye(4)
    ref = rotation if rotation is not None else translation
    dtype, device = ref.dtype, ref.device
    if rotation is None:
        rotation = torch.eye(3, dtype=dtype, device=device).expand(*translation.shape[:-1], 3, 3)
    if translation is None:
        translation = torch.zeros(*rotation.shape[:-2], 3, dtype=dtype, device=device)
    batch = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    pose = torch.zeros(*batch, 4, 4, dtype=dtype, device=device)
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1.0
    return pose


def invert_pose(pose: Tensor) -> Tensor:
    """Inverse of rigid poses using ``R^T`` (exact for orthonormal ``R``).

    Args:
        pose: ``(..., 4, 4)`` rigid transforms.

    Returns:
        ``(..., 4, 4)`` inverses.
    """
    check_poses(pose)
    rt = pose[..., :3, :3].transpose(-1, -2)
    return make_pose(rt, -(rt @ pose[..., :3, 3:4])[..., 0])


def matrix_to_quaternion(rotation: Tensor) -> Tensor:
    """Rotation matrices to unit quaternions ``(w, x, y, z)`` with ``w >= 0``.

    Args:
        rotation: ``(..., 3, 3)`` orthonormal, det +1.

    Returns:
        ``(..., 4)`` unit quaternions.
    """
    m = rotation
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate formulas; pick the numerically best-conditioned one per element.
    q_abs = torch.sqrt(
        torch.clamp(
            torch.stack(
                [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
            ),
            min=0.0,
        )
    )
    candidates = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                         m[..., 1, 0] - m[..., 0, 1]], dim=-1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], q_abs[..., 1] ** 2, m[..., 1, 0] + m[..., 0, 1],
                         m[..., 0, 2] + m[..., 2, 0]], dim=-1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], q_abs[..., 2] ** 2,
                         m[..., 2, 1] + m[..., 1, 2]], dim=-1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2],
                         q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    candidates = candidates / (2.0 * q_abs[..., :, None].clamp(min=0.1))
    best = q_abs.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(quaternion: Tensor) -> Tensor:
    """Quaternions ``(w, x, y, z)`` (normalised here) to rotation matrices.

    Args:
        quaternion: ``(..., 4)``.

    Returns:
        ``(..., 3, 3)``.
    """
    q = quaternion / quaternion.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def slerp_quaternions(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:
    """Spherical linear interpolation along the shortest arc.

    Args:
        q0: ``(4,)`` start quaternion.
        q1: ``(4,)`` end quaternion.
        t: ``(N,)`` fractions (0 gives ``q0``, 1 gives ``q1``; values outside extrapolate).

    Returns:
        ``(N, 4)`` unit quaternions.
    """
    q0 = q0 / q0.norm()
    q1 = q1 / q1.norm()
    dot = torch.dot(q0, q1)
    if dot < 0:  # q and -q are the same rotation: take the short way round
        q1, dot = -q1, -dot
    t = t[:, None].to(q0.dtype)
    if dot > 0.9995:  # nearly identical: normalised lerp avoids dividing by sin(~0)
        q = q0 + t * (q1 - q0)
        return q / q.norm(dim=-1, keepdim=True)
    theta = torch.arccos(dot.clamp(-1.0, 1.0))
    return (torch.sin((1 - t) * theta) * q0 + torch.sin(t * theta) * q1) / torch.sin(theta)


def interpolate_poses(c2w_a: Tensor, c2w_b: Tensor, t: Tensor | list[float] | float) -> Tensor:
    """Interpolate between two poses: rotation slerp, translation linear.

    Args:
        c2w_a: ``(4, 4)`` pose at ``t = 0``.
        c2w_b: ``(4, 4)`` pose at ``t = 1``.
        t: ``(N,)`` fractions (a float gives N = 1).

    Returns:
        ``(N, 4, 4)`` poses, same dtype as ``c2w_a``.

    Example:
        >>> a, b = torch.eye(4), make_pose(rotation_y(torch.tensor(0.5)), torch.tensor([1.0, 0, 0]))
        >>> interpolate_poses(a, b, torch.linspace(0, 1, 5)).shape
        torch.Size([5, 4, 4])
    """
    check_poses(c2w_a, "c2w_a")
    check_poses(c2w_b, "c2w_b")
    if c2w_a.shape != (4, 4) or c2w_b.shape != (4, 4):
        raise RecaptureError(
            f"interpolate_poses takes single (4, 4) poses, got {tuple(c2w_a.shape)} and {tuple(c2w_b.shape)}."
        )
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    a, b = c2w_a.double(), c2w_b.double()
    q = slerp_quaternions(matrix_to_quaternion(a[:3, :3]), matrix_to_quaternion(b[:3, :3]), t)
    trans = a[:3, 3] + t[:, None] * (b[:3, 3] - a[:3, 3])
    return make_pose(quaternion_to_matrix(q), trans).to(c2w_a.dtype)


def uniform_times(n: int) -> Tensor:
    """``n`` evenly spaced float64 times from 0 to 1 (``[0.]`` for one frame)."""
    return torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)


def _segments(key_times: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the left keyframe and the fraction inside its segment, for each query time."""
    k = key_times.numel()
    if k == 1:
        return torch.zeros_like(times, dtype=torch.long), torch.zeros_like(times)
    t = times.clamp(float(key_times[0]), float(key_times[-1]))
    idx = (torch.searchsorted(key_times.contiguous(), t.contiguous(), right=True) - 1).clamp(0, k - 2)
    frac = (t - key_times[idx]) / (key_times[idx + 1] - key_times[idx])
    return idx, frac


def sample_keyframes(key_times: Tensor, poses: Tensor, times: Tensor) -> Tensor:
    """Piecewise SE(3) interpolation of ``(K, 4, 4)`` key poses at increasing ``(K,)`` key times.

    Args:
        key_times: ``(K,)`` strictly increasing times.
        poses: ``(K, 4, 4)`` key poses.
        times: ``(N,)`` query times (clamped to the key range).

    Returns:
        ``(N, 4, 4)`` poses (slerp + linear translation inside each segment).
    """
    idx, frac = _segments(key_times, times)
    if poses.shape[0] == 1:
        return poses.expand(times.numel(), 4, 4).clone()
    out = [interpolate_poses(poses[i], poses[i + 1], f.reshape(1))[0] for i, f in zip(idx.tolist(), frac, strict=True)]
    return torch.stack(out).to(poses.dtype)


def lerp_keyframes(values: Tensor, times: Tensor, key_times: Tensor | None = None) -> Tensor:
    """Piecewise-linear interpolation of ``(K, ...)`` values at ``(N,)`` times (default keys: uniform)."""
    key_times = uniform_times(values.shape[0]) if key_times is None else key_times
    idx, frac = _segments(key_times, times)
    if values.shape[0] == 1:
        return values.expand(times.numel(), *values.shape[1:]).clone()
    frac = frac.to(values.dtype).reshape(-1, *([1] * (values.ndim - 1)))
    return values[idx] + frac * (values[(idx + 1).clamp(max=values.shape[0] - 1)] - values[idx])


def rotation_angle(rotation: Tensor) -> Tensor:
    """Rotation angle in radians of ``(..., 3, 3)`` matrices (geodesic distance to identity)."""
    trace = rotation[..., 0, 0] + rotation[..., 1, 1] + rotation[..., 2, 2]
    return torch.arccos(((trace - 1) / 2).clamp(-1.0, 1.0))


def deg2rad(value: Tensor | float) -> Tensor | float:
    """Degrees to radians for tensors and floats."""
    return value * (math.pi / 180.0)
