"""Readers and writers for other tools' camera files (used through :mod:`recapture.cameras.formats`).

Readers return ``(c2w, K)``: ``(T, 4, 4)`` float64 OpenCV camera-to-world poses (right-handed world)
and ``(T, 3, 3)`` pixel intrinsics or None. Facts about each format:

* **nerfstudio / NeRF** ``transforms.json``: ``frames[i]["transform_matrix"]`` is an OpenGL/Blender
  camera-to-world (x right, y up, z backward). Intrinsics ``fl_x, fl_y, cx, cy, w, h`` at the top
  level or per frame, or ``camera_angle_x`` (horizontal FOV, radians) with ``w``. Frame order = file order.
* **COLMAP** text model: ``images.txt`` has two lines per image, ``IMAGE_ID QW QX QY QZ TX TY TZ
  CAMERA_ID NAME`` (world-to-camera, OpenCV axes) then the 2D points; ``cameras.txt`` has
  ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS``. Frames are ordered by image name. Lens distortion is ignored.
* **ReCamMaster** ``camera_extrinsics.json``: ``{"frame0": {"cam01": "[a b c 0] [d e f 0] [g h i 0]
  [x y z 1]", ...}, ...}``: an Unreal Engine transform written row by row in Unreal's row-vector
  layout, so the rows are the camera's forward, right and up axes and its position (centimetres)
  in Unreal's left-handed world (x forward, y right, z up). We convert to OpenCV axes
  (x = right, y = -up, z = forward), metres, and make the world right-handed by negating its y axis
  (world x forward, y left, z up). Relative poses equal ReCamMaster's own
  (``c2w[:, [1, 2, 0]]``, y column negated, /100).
* **TrajectoryCrafter / CogNVS** spherical text: three lines of keyframe values, interpolated to the
  clip (cubic smoothing spline with pinned ends for more than 3 values, else linear).
  TrajectoryCrafter's order is ``theta``, ``phi``, ``r``; CogNVS's (and ViewCrafter's) is ``phi``,
  ``theta``, ``r``. ``theta`` > 0 moves the camera up, ``phi`` > 0 moves it right, both on a sphere
  around the pivot at depth ``radius`` on the optical axis (looking at it); ``r`` > 0 moves the
  camera forward by ``r * radius`` along the source optical axis. A single line of five numbers is
  TrajectoryCrafter's ``--target_pose theta phi r x y`` (x > 0 right, y > 0 up, not scaled by the
  radius), interpolated linearly. Both tools take the radius from the depth of the centre pixel;
  we use ``pivot_depth`` in scene units (1 = median depth), so a pose is
  ``truck x . pedestal y . dolly r . arc theta . orbit phi`` in our presets.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recapture.cameras.conventions import opencv_to_opengl, opengl_to_opencv
from recapture.cameras.poses import (
    as_float,
    as_number_tensor,
    invert_pose,
    make_pose,
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_x,
    rotation_y,
)
from recapture.utils import RecaptureError

log = logging.getLogger(__name__)


def read_text(path: Path, what: str = "trajectory file") -> str:
    """The UTF-8 text of ``path``; binary or unreadable files raise one :class:`RecaptureError`.

    Args:
        path: the file.
        what: what the file should be (``"COLMAP images.txt"``), used in messages.
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        byte = err.object[err.start : err.start + 1].hex()
        raise RecaptureError(
            f"{what} {path} is not UTF-8 text (byte 0x{byte} at offset {err.start}): it looks binary; "
            "pass the trajectory file itself (JSON or text, e.g. one written by `recapture trajectory`)."
        ) from err
    except OSError as err:
        raise RecaptureError(f"cannot read {what} {path} ({err.strerror or err}); check the path.") from err


def read_json(path: Path, what: str = "trajectory file") -> Any:
    """Parse ``path`` as JSON (see :func:`read_text`); syntax errors name the file, line and column."""
    import json

    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RecaptureError(
            f"{what} {path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); fix the file."
        ) from err


def _natural_key(text: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]


# ---------------------------------------------------------------- nerfstudio
def read_nerfstudio(path: Path) -> tuple[Tensor, Tensor | None]:
    """Read a nerfstudio / NeRF ``transforms.json`` (a file or a folder containing one)."""
    if path.is_dir():
        path = path / "transforms.json"
    obj = read_json(path, "nerfstudio transforms")
    frames = obj.get("frames") if isinstance(obj, dict) else None
    if not frames or not isinstance(frames, list):
        raise RecaptureError(f"{path}: no 'frames' list: not a nerfstudio/NeRF transforms.json.")
    poses, ks = [], []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "transform_matrix" not in frame:
            raise RecaptureError(f"{path}: frames[{i}] has no 'transform_matrix'.")
        m = as_number_tensor(
            frame["transform_matrix"], f"{path}: frames[{i}].transform_matrix", "a 4 x 4 list of numbers"
        )
        if m.shape == (3, 4):
            m = torch.cat([m, m.new_tensor([[0.0, 0.0, 0.0, 1.0]])])
        if m.shape != (4, 4):
            raise RecaptureError(f"{path}: frames[{i}].transform_matrix must be 4x4 or 3x4, got {tuple(m.shape)}.")
        poses.append(m)
        ks.append(_nerfstudio_k({**obj, **frame}, f"{path}: frames[{i}]"))
    c2w = opengl_to_opencv(torch.stack(poses))
    if any(k is None for k in ks):
        log.warning("%s: no usable intrinsics (fl_x/fl_y/cx/cy or camera_angle_x with w); using the video's.", path)
        return c2w, None
    return c2w, torch.stack(ks)


def _nerfstudio_k(d: dict[str, Any], where: str) -> Tensor | None:
    keys = ("w", "h", "fl_x", "fl_y", "cx", "cy", "camera_angle_x", "camera_angle_y")
    d = {k: as_float(d[k], f"{where} {k!r}") if d.get(k) is not None else None for k in keys}
    w, h = d.get("w"), d.get("h")
    fx, fy = d.get("fl_x"), d.get("fl_y")
    if fx is None and d.get("camera_angle_x") is not None and w is not None:
        fx = 0.5 * float(w) / math.tan(0.5 * float(d["camera_angle_x"]))
    if fy is None and d.get("camera_angle_y") is not None and h is not None:
        fy = 0.5 * float(h) / math.tan(0.5 * float(d["camera_angle_y"]))
    fx = fx if fx is not None else fy
    fy = fy if fy is not None else fx
    cx = d["cx"] if d["cx"] is not None else (None if w is None else float(w) / 2)
    cy = d["cy"] if d["cy"] is not None else (None if h is None else float(h) / 2)
    if fx is None or cx is None or cy is None:
        return None
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _image_size(K: Tensor, image_size: tuple[int, int] | None) -> tuple[int, int]:
    if image_size is not None:
        return int(image_size[0]), int(image_size[1])
    return max(1, round(2 * float(K[1, 2]))), max(1, round(2 * float(K[0, 2])))


def nerfstudio_dict(c2w: Tensor, K: Tensor | None, image_size: tuple[int, int] | None) -> dict[str, Any]:
    """A nerfstudio ``transforms.json`` object (OPENCV camera model, no distortion)."""
    gl = opencv_to_opengl(c2w.double())
    frames: list[dict[str, Any]] = [
        {"file_path": f"images/frame_{i + 1:05d}.png", "transform_matrix": gl[i].tolist()} for i in range(len(gl))
    ]
    out: dict[str, Any] = {"camera_model": "OPENCV"}
    if K is not None:
        def params(k: Tensor) -> dict[str, Any]:
            h, w = _image_size(k, image_size)
            return {"fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]), "cx": float(k[0, 2]), "cy": float(k[1, 2]),
                    "w": w, "h": h}

        if bool((K == K[:1]).all()):
            out.update(params(K[0]))
        else:  # per-frame intrinsics (zoom): nerfstudio reads them from each frame
            for frame, k in zip(frames, K, strict=True):
                frame.update(params(k))
    out["frames"] = frames
    return out


# ---------------------------------------------------------------- COLMAP
def find_colmap_dir(path: Path, required: bool = True) -> Path | None:
    """The folder holding ``images.txt`` for a COLMAP model given as a folder or either text file."""
    candidates = [path.parent] if path.is_file() else [path, path / "sparse" / "0", path / "sparse"]
    for folder in candidates:
        if (folder / "images.txt").is_file():
            return folder
    if not required:
        return None
    if any((folder / "images.bin").is_file() for folder in candidates):
        raise RecaptureError(
            f"{path}: only a binary COLMAP model was found; convert it with "
            "`colmap model_converter --input_path <model> --output_path <model> --output_type TXT`."
        )
    raise RecaptureError(f"{path}: no COLMAP images.txt found (looked in {', '.join(map(str, candidates))}).")


def _data_lines(path: Path) -> list[str]:
    text = read_text(path, "COLMAP text file")
    return [ln.rstrip("\n") for ln in text.splitlines() if not ln.startswith("#")]


def _floats(tokens: list[str], where: str) -> list[float]:
    try:
        return [float(v) for v in tokens]
    except ValueError as err:
        raise RecaptureError(f"{where}: expected numbers, got {' '.join(tokens)!r}; fix that line.") from err


def _int(token: str, where: Path) -> int:
    try:
        return int(token)
    except ValueError as err:
        raise RecaptureError(f"{where}: expected an integer id, got {token!r}; fix that line.") from err


def read_colmap(path: Path) -> tuple[Tensor, Tensor | None]:
    """Read a COLMAP text model; frames sorted by image name (natural order)."""
    folder = find_colmap_dir(path)
    cameras: dict[int, Tensor] = {}
    cam_file = folder / "cameras.txt"
    if cam_file.is_file():
        for ln in _data_lines(cam_file):
            tok = ln.split()
            if not tok:
                continue
            if len(tok) < 7:
                raise RecaptureError(
                    f"{cam_file}: bad camera line {ln!r} (expected CAMERA_ID MODEL W H PARAMS...)."
                )
            model, params = tok[1].upper(), _floats(tok[4:], f"{cam_file} camera {tok[0]}")
            if model.startswith(("SIMPLE", "RADIAL")):
                f, cx, cy = params[:3]
                fx = fy = f
            else:
                fx, fy, cx, cy = params[:4]
            if model not in ("SIMPLE_PINHOLE", "PINHOLE"):
                log.warning("%s: camera %s is %s; its distortion parameters are ignored.", cam_file, tok[0], model)
            k = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64)
            cameras[_int(tok[0], cam_file)] = k
    lines = _data_lines(folder / "images.txt")
    images: list[tuple[str, Tensor, int]] = []
    i = 0
    while i < len(lines):  # header line, then a 2D-points line that may be empty (as COLMAP reads it)
        tok = lines[i].split()
        if not tok:
            i += 1
            continue
        if len(tok) < 10:
            raise RecaptureError(f"{folder / 'images.txt'}: bad image line {lines[i]!r} (expected 10 fields).")
        where = f"{folder / 'images.txt'} image {tok[0]}"
        q = torch.tensor(_floats(tok[1:5], where), dtype=torch.float64)
        t = torch.tensor(_floats(tok[5:8], where), dtype=torch.float64)
        w2c = make_pose(quaternion_to_matrix(q), t)
        images.append((" ".join(tok[9:]), invert_pose(w2c), _int(tok[8], folder / "images.txt")))
        i += 2
    if not images:
        raise RecaptureError(f"{folder / 'images.txt'}: no images listed.")
    images.sort(key=lambda item: _natural_key(item[0]))
    c2w = torch.stack([img[1] for img in images])
    if not all(img[2] in cameras for img in images):
        log.warning("%s: cameras.txt missing or incomplete; intrinsics not loaded.", folder)
        return c2w, None
    return c2w, torch.stack([cameras[img[2]] for img in images])


def write_colmap(folder: Path, c2w: Tensor, K: Tensor | None, image_size: tuple[int, int] | None) -> None:
    """Write ``cameras.txt`` (one PINHOLE camera per distinct K), ``images.txt`` and empty ``points3D.txt``."""
    if K is None:
        raise RecaptureError("COLMAP files need intrinsics: pass K (the video's 3x3 intrinsics) to save_trajectory.")
    folder.mkdir(parents=True)
    cam_ids: dict[tuple[float, ...], int] = {}
    cam_lines, img_lines = [], []
    w2c = invert_pose(c2w.double())
    for i, (pose, k) in enumerate(zip(w2c, K.double(), strict=True)):
        key = tuple(round(float(v), 9) for v in (k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
        if key not in cam_ids:
            cam_ids[key] = len(cam_ids) + 1
            h, w = _image_size(k, image_size)
            cam_lines.append(f"{cam_ids[key]} PINHOLE {w} {h} " + " ".join(f"{v:.12g}" for v in key))
        q = matrix_to_quaternion(pose[:3, :3])
        vals = " ".join(f"{float(v):.12g}" for v in [*q, *pose[:3, 3]])
        img_lines += [f"{i + 1} {vals} {cam_ids[key]} frame_{i:05d}.png", ""]
    (folder / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        + "\n".join(cam_lines) + "\n"
    )
    (folder / "images.txt").write_text(
        "# Image list with two lines of data per image:\n#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
        "#   POINTS2D[] as (X, Y, POINT3D_ID)\n" + "\n".join(img_lines) + "\n"
    )
    (folder / "points3D.txt").write_text("# 3D point list (empty: written by recapture)\n")


# ---------------------------------------------------------------- ReCamMaster
_WORLD_FLIP = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))  # Unreal (left-handed) <-> ours
# Written files place the source camera (identity pose) looking along Unreal +x with +z up: an identity
# Unreal transform. Relative poses, which ReCamMaster uses, do not depend on this choice.
_SOURCE_IN_UNREAL = make_pose(torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64))


def _parse_unreal(text: str, where: str) -> Tensor:
    if not isinstance(text, str):
        raise RecaptureError(f"{where}: expected a string '[..] [..] [..] [..]', got {text!r}.")
    rows = [_floats(row.split(), where) for row in re.findall(r"\[([^\[\]]*)\]", text)]
    if len(rows) != 4 or any(len(r) not in (3, 4) for r in rows):
        raise RecaptureError(f"{where}: expected '[..] [..] [..] [..]' (4 rows of 3 or 4 numbers), got {text!r}.")
    a = torch.tensor([r[:3] for r in rows], dtype=torch.float64)
    forward, right, up, position = a
    rot = _WORLD_FLIP @ torch.stack([right, -up, forward], dim=-1)
    return make_pose(rot, _WORLD_FLIP @ position / 100.0)


def read_recammaster(path: Path, camera: str | None = None) -> tuple[Tensor, None]:
    """Read one camera of a ReCamMaster ``camera_extrinsics.json`` (frames in numeric order)."""
    obj = read_json(path, "ReCamMaster camera file")
    if not isinstance(obj, dict):
        obj = {}
    frame_keys = sorted((k for k in obj if re.fullmatch(r"frame\d+", k)), key=lambda k: int(k[5:]))
    if not frame_keys:
        raise RecaptureError(f"{path}: no 'frame<N>' keys: not a ReCamMaster camera_extrinsics.json.")
    bad = [k for k in frame_keys if not isinstance(obj[k], dict)]
    if bad:
        raise RecaptureError(f"{path}: {bad[0]} must map camera names to poses, got {obj[bad[0]]!r}.")
    cams = sorted(obj[frame_keys[0]])
    if camera is None:
        if len(cams) != 1:
            raise RecaptureError(f"{path} holds cameras {cams}; choose one with camera= (file_camera), e.g. {cams[0]!r}.")
        camera = cams[0]
    missing = [k for k in frame_keys if camera not in obj[k]]
    if missing:
        raise RecaptureError(f"{path}: camera {camera!r} is missing in {missing[:3]}...; available: {cams}.")
    return torch.stack([_parse_unreal(obj[k][camera], f"{path} {k}/{camera}") for k in frame_keys]), None


def recammaster_dict(c2w: Tensor, camera: str = "cam01") -> dict[str, Any]:
    """A ReCamMaster ``camera_extrinsics.json`` object with one camera (inverse of the reader).

    The source camera (identity) is written as the identity Unreal transform (looking along +x,
    +z up), so ``load_trajectory(..., relative=True)`` returns the poses unchanged when ``c2w[0]``
    is the identity (gradual trajectories).
    """
    out: dict[str, Any] = {}
    for i, pose in enumerate(_SOURCE_IN_UNREAL @ c2w.double()):
        rot, pos = _WORLD_FLIP @ pose[:3, :3], _WORLD_FLIP @ pose[:3, 3] * 100.0
        rows = [rot[:, 2], rot[:, 0], -rot[:, 1]]  # forward, right, up
        text = " ".join("[" + " ".join(f"{float(v) + 0.0:.9g}" for v in r) + " 0]" for r in rows)
        out[f"frame{i}"] = {camera: text + " [" + " ".join(f"{float(v) + 0.0:.9g}" for v in pos) + " 1]"}
    return out


# ---------------------------------------------------------------- spherical text
def _interp(values: list[float], n: int, interpolation: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if interpolation == "auto" and len(v) == n:
        return v
    if len(v) == 1:
        return np.full(n, v[0])
    x, xn = np.linspace(0.0, 1.0, len(v)), np.linspace(0.0, 1.0, n)
    if interpolation in ("auto", "spline") and len(v) > 3:
        from scipy.interpolate import UnivariateSpline

        out = UnivariateSpline(x, v, k=3)(xn)
        out[0], out[-1] = v[0], v[-1]
        return out
    if interpolation not in ("auto", "spline", "linear"):
        raise RecaptureError(f"interpolation must be 'auto', 'spline' or 'linear', got {interpolation!r}.")
    return np.interp(xn, x, v)


def spherical_pose(theta: Tensor, phi: Tensor, r: Tensor, radius: float,
                   x: Tensor | None = None, y: Tensor | None = None) -> Tensor:
    """OpenCV c2w of TrajectoryCrafter-style offsets (degrees; ``r`` relative to ``radius``), ``(T, 4, 4)``."""
    rot = rotation_x(-torch.deg2rad(theta)) @ rotation_y(-torch.deg2rad(phi))
    zeros = torch.zeros_like(theta)
    offset = torch.stack([zeros if x is None else x, zeros if y is None else -y, r * radius], dim=-1)
    pivot = torch.tensor([0.0, 0.0, radius], dtype=rot.dtype)
    return make_pose(rot, offset + pivot - radius * rot[..., :, 2])


def read_spherical_txt(path: Path, fmt: str, num_frames: int | None, pivot_depth: float,
                       interpolation: str = "auto") -> tuple[Tensor, None]:
    """Read a TrajectoryCrafter (theta, phi, r) or CogNVS (phi, theta, r) text trajectory."""
    if not float(pivot_depth) > 0:
        raise RecaptureError(f"pivot_depth (the sphere radius) must be > 0, got {pivot_depth}.")
    text = read_text(path, f"{fmt} trajectory")
    lines = [_floats(ln.replace(",", " ").split(), f"{path} ({fmt} text holds only numbers)")
             for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1 and len(lines[0]) == 5 and fmt == "trajectorycrafter":
        n = num_frames or 2
        theta, phi, r, x, y = (torch.linspace(0.0, v, n, dtype=torch.float64) for v in lines[0])
        return spherical_pose(theta, phi, r, float(pivot_depth), x, y), None
    if len(lines) != 3 or any(not ln for ln in lines):
        raise RecaptureError(
            f"{path}: expected 3 non-empty lines ({'theta, phi, r' if fmt == 'trajectorycrafter' else 'phi, theta, r'})"
            f" for format {fmt!r}, got {len(lines)} lines."
        )
    n = num_frames or max(len(ln) for ln in lines)
    seqs = [torch.from_numpy(_interp(ln, n, interpolation)) for ln in lines]
    theta, phi = (seqs[0], seqs[1]) if fmt == "trajectorycrafter" else (seqs[1], seqs[0])
    return spherical_pose(theta, phi, seqs[2], float(pivot_depth)), None


def spherical_txt(c2w: Tensor, fmt: str, pivot_depth: float, atol: float = 1e-4) -> str:
    """Per-frame spherical text for poses of the form ``dolly . arc . orbit`` (else a clear error)."""
    radius = float(pivot_depth)
    a = c2w.double()[:, :3, :3].transpose(1, 2)  # = Ry(phi) Rx(theta)
    theta = torch.rad2deg(torch.atan2(-a[:, 1, 2], a[:, 1, 1]))
    phi = torch.rad2deg(torch.atan2(-a[:, 2, 0], a[:, 0, 0]))
    rebuilt = spherical_pose(theta, phi, torch.zeros_like(theta), radius)
    offset = c2w.double()[:, :3, 3] - rebuilt[:, :3, 3]
    bad_rot = (rebuilt[:, :3, :3] - c2w.double()[:, :3, :3]).abs().flatten(1).amax(1) > atol
    bad_off = offset[:, :2].abs().amax(1) > atol * max(1.0, radius)
    if bool(bad_rot.any()) or bool(bad_off.any()):
        i = int((bad_rot | bad_off).nonzero()[0])
        raise RecaptureError(
            f"pose {i} cannot be written as {fmt} theta/phi/r (it has roll or a sideways/vertical offset); "
            "save it in the 'recapture' format instead."
        )
    r = offset[:, 2] / radius
    fmt_line = lambda v: " ".join(f"{float(x) + 0.0:.10g}" for x in v)  # noqa: E731
    first, second = (theta, phi) if fmt == "trajectorycrafter" else (phi, theta)
    return "\n".join([fmt_line(first), fmt_line(second), fmt_line(r)]) + "\n"
