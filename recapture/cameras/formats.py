"""Trajectory files: our JSON format, foreign formats, validation on load.

Our format (``format="recapture"``), one JSON object::

    {
      "format": "recapture.trajectory/v1",   # required, versioned
      "convention": "opencv",                # "opencv" (x right, y down, z forward) or "opengl"
      "name": "orbit 20 (gradual, ease_in_out)",
      "num_frames": 14,
      "c2w": [[[...4 floats...] x 4] x T],   # camera-to-world, relative to the source camera of
                                             # each frame, translations in scene units (1 = median depth)
      "intrinsics": null | [[3 floats] x 3] | [[[3 floats] x 3] x T],   # absolute, pixels
      "focal_scale": null | [T floats],      # zoom multipliers applied to the video's K
      "pivot": null | [x, y, z]              # look-at point of orbit/arc moves (preview only)
    }

Only ``format`` and ``c2w`` are required. Other formats (``FORMATS``):

* ``nerfstudio``: nerfstudio / NeRF ``transforms.json`` (OpenGL c2w per frame in ``frames``; intrinsics
  from ``fl_x``/``fl_y``/``cx``/``cy``/``w``/``h`` or ``camera_angle_x``).
* ``colmap``: a COLMAP text model (``images.txt`` + ``cameras.txt``; world-to-camera quaternions,
  frames ordered by image name).
* ``recammaster``: ReCamMaster's ``camera_extrinsics.json`` (Unreal Engine, centimetres).
* ``trajectorycrafter`` / ``cognvs``: the spherical text files of TrajectoryCrafter and CogNVS.

Absolute-pose formats (nerfstudio, COLMAP, ReCamMaster) are made relative to the first frame's
camera (``inv(c2w[0]) @ c2w[t]``) when ``relative=True`` (the default); pass ``relative=False`` for
the absolute poses (OpenCV axes, the file's world frame and units). Every load checks that poses
are finite rigid transforms (orthonormal rotation, det +1) and resamples, with a notice, when
``num_frames`` differs from the file's pose count.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from recapture.cameras import external_formats as ext
from recapture.cameras.conventions import opengl_to_opencv
from recapture.cameras.poses import as_number_tensor, invert_pose
from recapture.cameras.trajectory import Trajectory, check_focal_scale, check_pivot
from recapture.utils import RecaptureError, atomic_path, write_json

__all__ = ["FORMAT_ID", "FORMATS", "detect_format", "load_trajectory", "save_trajectory", "validate_c2w",
           "validate_intrinsics"]

FORMAT_ID = "recapture.trajectory/v1"
FORMATS: tuple[str, ...] = ("recapture", "nerfstudio", "colmap", "recammaster", "trajectorycrafter", "cognvs")


def validate_c2w(c2w: Tensor, name: str = "c2w", atol: float = 1e-3) -> None:
    """Raise :class:`RecaptureError` unless every pose is a finite rigid transform.

    Checks: shape ``(..., 4, 4)``; all values finite; bottom row ``[0, 0, 0, 1]``; rotation
    orthonormal (``max |R^T R - I| <= atol``) with determinant +1. Errors name the first bad frame.

    Args:
        c2w: ``(..., 4, 4)`` poses.
        name: what the poses are (a file name), used in messages.
        atol: tolerance for the bottom row and orthonormality.
    """
    if not isinstance(c2w, Tensor) or c2w.ndim < 2 or tuple(c2w.shape[-2:]) != (4, 4):
        raise RecaptureError(f"{name}: poses must have shape (..., 4, 4), got {tuple(getattr(c2w, 'shape', ()))}.")
    poses = c2w.detach().double().reshape(-1, 4, 4)
    bad = ~torch.isfinite(poses).flatten(1).all(dim=1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise RecaptureError(f"{name}: pose {i} contains NaN or inf values; fix or drop that frame.")
    bottom = (poses[:, 3] - poses.new_tensor([0.0, 0.0, 0.0, 1.0])).abs().amax(dim=1)
    if bool((bottom > atol).any()):
        i = int((bottom > atol).nonzero()[0])
        raise RecaptureError(
            f"{name}: pose {i} has bottom row {poses[i, 3].tolist()}, expected [0, 0, 0, 1] "
            "(is it a projection matrix or a transposed pose?)."
        )
    rot = poses[:, :3, :3]
    err = (rot.transpose(1, 2) @ rot - torch.eye(3, dtype=rot.dtype)).abs().flatten(1).amax(dim=1)
    if bool((err > atol).any()):
        i = int((err > atol).nonzero()[0])
        raise RecaptureError(
            f"{name}: the rotation of pose {i} is not orthonormal (max |R^T R - I| = {float(err[i]):.3g}); "
            "scaled or sheared poses are not supported: remove the scale from the rotation part."
        )
    det = torch.linalg.det(rot)
    if bool((det < 0).any()):
        i = int((det < 0).nonzero()[0])
        raise RecaptureError(
            f"{name}: the rotation of pose {i} has determinant {float(det[i]):.3f} (a mirrored, left-handed "
            "frame); the file's axis convention is probably mismatched: check the format / convention."
        )


def validate_intrinsics(K: Tensor, num_frames: int, name: str = "intrinsics") -> Tensor:
    """Check pixel intrinsics and return them as ``(T, 3, 3)`` float32.

    Args:
        K: ``(3, 3)`` or ``(T, 3, 3)``.
        num_frames: ``T``.
        name: used in messages.

    Returns:
        ``(T, 3, 3)`` float32.
    """
    K = as_number_tensor(K, name, "a 3 x 3 (or T x 3 x 3) array of numbers").float()
    if K.shape == (3, 3):
        K = K.expand(num_frames, 3, 3).clone()
    if tuple(K.shape) != (num_frames, 3, 3):
        raise RecaptureError(f"{name}: expected (3, 3) or ({num_frames}, 3, 3) intrinsics, got {tuple(K.shape)}.")
    if not bool(torch.isfinite(K).all()):
        raise RecaptureError(f"{name}: intrinsics contain NaN or inf values.")
    if bool((K[:, 0, 0] <= 0).any()) or bool((K[:, 1, 1] <= 0).any()):
        raise RecaptureError(f"{name}: focal lengths must be > 0 pixels, got fx={K[:, 0, 0].tolist()}.")
    if not torch.allclose(K[:, 2], K.new_tensor([0.0, 0.0, 1.0]).expand(num_frames, 3), atol=1e-6):
        raise RecaptureError(f"{name}: the last row of K must be [0, 0, 1], got {K[0, 2].tolist()}.")
    return K


def detect_format(path: str | os.PathLike) -> str:
    """Guess a trajectory file's format from its name and content (see :data:`FORMATS`)."""
    path = Path(path)
    if path.is_dir():
        if ext.find_colmap_dir(path, required=False) is not None:
            return "colmap"
        if (path / "transforms.json").is_file():
            return "nerfstudio"
        raise RecaptureError(
            f"cannot tell the trajectory format of folder {path}: expected a COLMAP text model (images.txt) "
            "or transforms.json inside; pass the file itself or set the format."
        )
    if not path.is_file():
        raise RecaptureError(f"trajectory file {path} does not exist.")
    if path.name in ("images.txt", "cameras.txt"):
        return "colmap"
    if path.suffix.lower() == ".json":
        obj = _read_json(path)
        if isinstance(obj, dict) and str(obj.get("format", "")).startswith("recapture.trajectory"):
            return "recapture"
        if isinstance(obj, dict) and "frames" in obj:
            return "nerfstudio"
        if isinstance(obj, dict) and any(re.fullmatch(r"frame\d+", str(k)) for k in obj):
            return "recammaster"
        raise RecaptureError(
            f"{path}: unrecognised JSON trajectory: expected our format ('format': '{FORMAT_ID}'), "
            "a nerfstudio transforms.json ('frames') or a ReCamMaster camera_extrinsics.json ('frame0', ...)."
        )
    if path.suffix.lower() == ".txt":
        lines = [ln for ln in ext.read_text(path).splitlines() if ln.strip()]
        if len(lines) == 1 and len(lines[0].split()) == 5:
            return "trajectorycrafter"
        raise RecaptureError(
            f"{path}: spherical text trajectories are ambiguous: TrajectoryCrafter writes the lines as "
            "theta, phi, r but CogNVS/ViewCrafter as phi, theta, r. Set the format to 'trajectorycrafter' or 'cognvs'."
        )
    raise RecaptureError(f"{path}: unknown trajectory file type {path.suffix!r}; supported formats: {', '.join(FORMATS)}.")


def _read_json(path: Path) -> Any:
    return ext.read_json(path)


def _read_recapture(path: Path) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
    """Poses, intrinsics (or None) and the optional fields of our JSON format, checked; errors name the file."""
    obj = _read_json(path)
    if not isinstance(obj, dict) or not str(obj.get("format", "")).startswith("recapture.trajectory"):
        raise RecaptureError(f"{path}: not a recapture trajectory (missing \"format\": \"{FORMAT_ID}\").")
    if obj["format"] != FORMAT_ID:
        raise RecaptureError(f"{path}: unsupported version {obj['format']!r}; this recapture reads {FORMAT_ID!r}.")
    if "c2w" not in obj:
        raise RecaptureError(f"{path}: missing the required key 'c2w' (a list of T 4x4 matrices).")
    c2w = as_number_tensor(obj["c2w"], f"{path}: 'c2w'", "a T x 4 x 4 list of numbers").double()
    if c2w.ndim != 3 or tuple(c2w.shape[1:]) != (4, 4) or c2w.shape[0] == 0:
        raise RecaptureError(f"{path}: 'c2w' must be a non-empty T x 4 x 4 list, got shape {tuple(c2w.shape)}.")
    convention = obj.get("convention", "opencv")
    if convention == "opengl":
        c2w = opengl_to_opencv(c2w)
    elif convention != "opencv":
        raise RecaptureError(f"{path}: 'convention' must be 'opencv' or 'opengl', got {convention!r}.")
    t = c2w.shape[0]
    k = obj.get("intrinsics")
    if k is not None:
        where = f"{path}: 'intrinsics'"
        k = validate_intrinsics(as_number_tensor(k, where, "a 3 x 3 or T x 3 x 3 list of numbers"), t, where)
    name = obj.get("name")
    if name is not None and not isinstance(name, str):
        raise RecaptureError(f"{path}: 'name' must be a string or null, got {name!r}.")
    extra: dict[str, Any] = {"name": name, "focal_scale": None, "pivot": None}
    if obj.get("focal_scale") is not None:
        extra["focal_scale"] = check_focal_scale(obj["focal_scale"], t, f"{path}: 'focal_scale'")
    if obj.get("pivot") is not None:
        extra["pivot"] = check_pivot(obj["pivot"], f"{path}: 'pivot'")
    return c2w, k, extra


def _resolve_format(path: Path, format: str) -> str:
    if format == "auto":
        return detect_format(path)
    if format not in FORMATS:
        raise RecaptureError(f"unknown trajectory format {format!r}; choose 'auto' or one of {', '.join(FORMATS)}.")
    return format


def load_trajectory(
    path: str | os.PathLike,
    format: str = "auto",
    num_frames: int | None = None,
    relative: bool = True,
    pivot_depth: float = 1.0,
    camera: str | None = None,
    scale: float = 1.0,
    interpolation: str = "auto",
) -> Trajectory:
    """Read a trajectory file into a validated :class:`Trajectory` (OpenCV camera-to-world).

    Args:
        path: the file (or a COLMAP / nerfstudio folder).
        format: ``"auto"`` or one of :data:`FORMATS`.
        num_frames: frames of the clip; a file with another pose count is resampled (with a notice).
            Spherical text files are interpolated to it directly, like their original tools do.
        relative: make absolute-pose formats relative to their first camera (our files and
            spherical text files are relative already and are never changed).
        pivot_depth: radius (scene units) of TrajectoryCrafter/CogNVS spherical files.
        camera: camera key of multi-camera files (ReCamMaster ``"cam01"``).
        scale: multiplier for the file's translations (their units become scene units: 1 = median depth).
        interpolation: spherical text only: ``"auto"`` (exact when the value count equals the frame
            count, else spline/linear as upstream), ``"spline"`` or ``"linear"``.

    Returns:
        A :class:`Trajectory`; absolute intrinsics are kept when the file has them.
    """
    path = Path(path)
    fmt = _resolve_format(path, format)
    name = path.name if path.name else str(path)
    extra: dict[str, Any] = {}
    is_relative = fmt in ("recapture", "trajectorycrafter", "cognvs")
    if fmt == "recapture":
        c2w, K, extra = _read_recapture(path)
    elif fmt == "nerfstudio":
        c2w, K = ext.read_nerfstudio(path)
    elif fmt == "colmap":
        c2w, K = ext.read_colmap(path)
    elif fmt == "recammaster":
        c2w, K = ext.read_recammaster(path, camera=camera)
    else:
        c2w, K = ext.read_spherical_txt(path, fmt, num_frames=num_frames, pivot_depth=pivot_depth,
                                        interpolation=interpolation)
    validate_c2w(c2w, name)
    if K is not None:
        K = validate_intrinsics(K, c2w.shape[0], f"{name} intrinsics")
    if relative and not is_relative:
        c2w = invert_pose(c2w[:1]) @ c2w
    if float(scale) != 1.0:
        if not float(scale) > 0:
            raise RecaptureError(f"scale must be > 0, got {scale}.")
        c2w = c2w.clone()
        c2w[:, :3, 3] *= float(scale)
    traj = Trajectory(
        c2w=c2w.float(), intrinsics=K, focal_scale=extra.get("focal_scale"),
        name=extra.get("name") or name, pivot=extra.get("pivot"),
    )
    if num_frames is not None:
        traj = traj.resample(num_frames)
    return traj


def save_trajectory(
    trajectory: Trajectory,
    path: str | os.PathLike,
    format: str = "recapture",
    K: Tensor | None = None,
    image_size: tuple[int, int] | None = None,
    pivot_depth: float = 1.0,
    camera: str = "cam01",
) -> Path:
    """Write a trajectory atomically (COLMAP writes a folder with ``cameras.txt`` and ``images.txt``).

    Args:
        trajectory: what to write; poses are written in the source camera's frame.
        path: output file (folder for COLMAP).
        format: one of :data:`FORMATS` (not ``"auto"``).
        K: ``(3, 3)`` source intrinsics used by formats that store absolute intrinsics (nerfstudio,
            COLMAP) when the trajectory has none; zoom focal scales are applied to it.
        image_size: ``(H, W)`` for nerfstudio/COLMAP; default ``(round(2 cy), round(2 cx))``.
        pivot_depth: radius of spherical text files (scene units).
        camera: camera key written into ReCamMaster files.

    Returns:
        The written path.
    """
    path = Path(path)
    if format not in FORMATS:
        raise RecaptureError(f"unknown trajectory format {format!r}; choose one of {', '.join(FORMATS)}.")
    validate_c2w(trajectory.c2w, trajectory.name or "trajectory")
    if format == "recapture":
        return write_json(path, trajectory_to_dict(trajectory))
    intrinsics = trajectory.intrinsics_for(K) if (trajectory.intrinsics is not None or K is not None) else None
    with atomic_path(path) as tmp:
        if format == "nerfstudio":
            tmp.write_text(json.dumps(ext.nerfstudio_dict(trajectory.c2w, intrinsics, image_size), indent=2) + "\n")
        elif format == "colmap":
            ext.write_colmap(tmp, trajectory.c2w, intrinsics, image_size)
        elif format == "recammaster":
            tmp.write_text(json.dumps(ext.recammaster_dict(trajectory.c2w, camera), indent=2) + "\n")
        else:
            tmp.write_text(ext.spherical_txt(trajectory.c2w, format, pivot_depth))
    return path


def trajectory_to_dict(trajectory: Trajectory) -> dict[str, Any]:
    """Our JSON object for ``trajectory`` (see the module docstring)."""
    k = trajectory.intrinsics
    if k is not None and bool((k == k[:1]).all()):
        k = k[0]
    return {
        "format": FORMAT_ID,
        "convention": "opencv",
        "name": trajectory.name,
        "num_frames": trajectory.num_frames,
        "c2w": trajectory.c2w.tolist(),
        "intrinsics": None if k is None else k.tolist(),
        "focal_scale": None if trajectory.focal_scale is None else trajectory.focal_scale.tolist(),
        "pivot": None if trajectory.pivot is None else trajectory.pivot.tolist(),
    }
