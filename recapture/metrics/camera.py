"""Camera accuracy (RotErr, TransErr, CamMC) with CamI2V's normalisation, and pose-file readers.

The generated video's poses come from an external estimator (COLMAP/GLOMAP, VGGT, MegaSaM, ...);
the requested trajectory is what the user asked for. Both are made relative to their first frame
(``inv(c2w_0) c2w_i``), each trajectory's translations are divided by its own largest camera
distance from frame 0, and the errors are summed over frames:

* RotErr = sum_i arccos(clamp((tr(R_gt,i^T R_gen,i) - 1) / 2, -1, 1))   (radians)
* TransErr = sum_i ||t_gt,i - t_gen,i||_2
* CamMC = sum_i ||[R|t]_gt,i - [R|t]_gen,i||_F

Poses are ``(N, 4, 4)`` (or ``(N, 3, 4)``) camera-to-world, OpenCV axes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recapture.metrics.common import MergeableMetric
from recapture.metrics.registry import register_metric
from recapture.utils import RecaptureError

CAMERA_KEYS = ("rot_err", "trans_err", "cammc")


def _as_c2w(poses: Tensor | np.ndarray, name: str) -> Tensor:
    p = torch.as_tensor(np.asarray(poses) if not isinstance(poses, Tensor) else poses).double()
    if p.ndim != 3 or p.shape[-1] != 4 or p.shape[-2] not in (3, 4):
        raise RecaptureError(
            f"{name} must have shape (N, 4, 4) or (N, 3, 4) camera-to-world, got {tuple(p.shape)}"
        )
    if p.shape[-2] == 3:
        bottom = torch.tensor([0, 0, 0, 1], dtype=p.dtype).expand(p.shape[0], 1, 4)
        p = torch.cat([p, bottom], dim=-2)
    return p


def relative_to_first(c2w: Tensor) -> Tensor:
    """Express every pose relative to the first: ``inv(c2w_0) @ c2w_i``.

    Args:
        c2w: ``(N, 4, 4)`` camera-to-world.

    Returns:
        ``(N, 4, 4)``; the first pose is the identity.
    """
    return torch.linalg.inv(c2w[:1]) @ c2w


def normalize_translation_scale(c2w: Tensor, eps: float = 1e-12) -> Tensor:
    """Divide the translations by the largest camera distance from the origin (CamI2V).

    A trajectory whose cameras never move (largest distance <= ``eps``) is left unchanged.

    Args:
        c2w: ``(N, 4, 4)`` camera-to-world, usually relative to the first frame.
        eps: distances at or below this count as zero.

    Returns:
        ``(N, 4, 4)``.
    """
    scale = c2w[:, :3, 3].norm(dim=-1).max()
    if scale <= eps:
        return c2w.clone()
    out = c2w.clone()
    out[:, :3, 3] = out[:, :3, 3] / scale
    return out


def camera_errors(
    pred_c2w: Tensor | np.ndarray, target_c2w: Tensor | np.ndarray, normalize: bool = True
) -> dict[str, float]:
    """RotErr, TransErr and CamMC between estimated and requested trajectories of one video.

    Args:
        pred_c2w: ``(N, 4, 4)`` or ``(N, 3, 4)`` poses estimated from the generated video.
        target_c2w: same shape, the requested trajectory.
        normalize: make both relative to their first frame and scale-normalise them (CamI2V);
            with ``False`` the poses are compared as given.

    Returns:
        ``{"rot_err": radians, "trans_err": ..., "cammc": ...}``, each summed over frames.
    """
    pred, target = _as_c2w(pred_c2w, "pred_c2w"), _as_c2w(target_c2w, "target_c2w")
    if pred.shape != target.shape:
        raise RecaptureError(
            f"the estimated trajectory has {pred.shape[0]} poses and the requested one {target.shape[0]}; "
            "they must cover the same frames (an estimator that dropped frames needs them filled or the "
            "requested poses trimmed to match)"
        )
    if normalize:
        pred = normalize_translation_scale(relative_to_first(pred))
        target = normalize_translation_scale(relative_to_first(target))
    r_gen, r_gt = pred[:, :3, :3], target[:, :3, :3]
    trace = (r_gt.transpose(-1, -2) @ r_gen).diagonal(dim1=-2, dim2=-1).sum(-1)
    rot = torch.arccos(((trace - 1) / 2).clamp(-1, 1)).sum()
    trans = (target[:, :3, 3] - pred[:, :3, 3]).norm(dim=-1).sum()
    cammc = (target[:, :3, :] - pred[:, :3, :]).flatten(1).norm(dim=-1).sum()
    return {"rot_err": float(rot), "trans_err": float(trans), "cammc": float(cammc)}


def quaternion_to_rotation(q: Tensor) -> Tensor:
    """Rotation matrices from unit quaternions in (w, x, y, z) order.

    Args:
        q: ``(..., 4)``; normalised here.

    Returns:
        ``(..., 3, 3)``.
    """
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def read_colmap_images(path: str | os.PathLike) -> tuple[list[str], Tensor]:
    """Read COLMAP's text ``images.txt`` (qvec w,x,y,z and tvec of world-to-camera).

    Args:
        path: the ``images.txt`` file.

    Returns:
        image names sorted by name, and their ``(N, 4, 4)`` float64 camera-to-world poses.
    """
    lines = [ln for ln in Path(path).read_text().splitlines() if not ln.lstrip().startswith("#")]
    entries = []
    for ln in lines[0::2]:  # each image line is followed by its (possibly empty) 2D-points line
        parts = ln.split()
        if not parts:
            continue
        if len(parts) < 10:
            raise RecaptureError(
                f"{path}: cannot parse COLMAP image line {ln!r} (expected ID QW QX QY QZ TX TY TZ CAM NAME)"
            )
        values = torch.tensor([float(v) for v in parts[1:8]], dtype=torch.float64)
        entries.append((" ".join(parts[9:]), values))
    if not entries:
        raise RecaptureError(f"{path} lists no registered images")
    entries.sort(key=lambda e: e[0])
    qt = torch.stack([e[1] for e in entries])
    r_w2c = quaternion_to_rotation(qt[:, :4])
    c2w = torch.eye(4, dtype=torch.float64).repeat(len(entries), 1, 1)
    c2w[:, :3, :3] = r_w2c.transpose(-1, -2)
    c2w[:, :3, 3] = -(r_w2c.transpose(-1, -2) @ qt[:, 4:, None])[..., 0]
    return [e[0] for e in entries], c2w


def read_poses(path: str | os.PathLike) -> Tensor:
    """Read camera-to-world poses from COLMAP text, JSON or NPY.

    Accepted: COLMAP ``images.txt`` (or a folder holding it, also under ``sparse/0``), frames
    ordered by image name; ``.npy`` of shape ``(N, 4, 4)`` / ``(N, 3, 4)``; ``.json`` holding such a
    nested list, or an object whose ``"c2w"`` (or ``"poses"``) entry does. JSON/NPY matrices are
    camera-to-world with OpenCV axes. Other trajectory files (nerfstudio ``transforms.json``,
    ReCamMaster, ...) are read through ``recapture.cameras.formats.load_trajectory`` when available.

    Args:
        path: the pose file or COLMAP folder.

    Returns:
        ``(N, 4, 4)`` float64 camera-to-world.
    """
    p = Path(path)
    if p.is_dir():
        for cand in (p / "images.txt", p / "sparse" / "0" / "images.txt", p / "0" / "images.txt"):
            if cand.is_file():
                return read_colmap_images(cand)[1]
        raise RecaptureError(f"{p} is a folder without a COLMAP images.txt; pass the pose file itself")
    if not p.is_file():
        raise RecaptureError(f"pose file {p} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return read_colmap_images(p)[1]
    if suffix == ".npy":
        return _as_c2w(np.load(p), str(p))
    if suffix == ".json":
        obj = json.loads(p.read_text())
        if isinstance(obj, dict):
            key = next((k for k in ("c2w", "poses") if k in obj), None)
            if key is None:
                try:
                    other = _read_with_cameras(p)
                except RecaptureError as err:
                    other, why = None, f" ({err})"
                else:
                    why = ""
                if other is not None:
                    return other
                raise RecaptureError(
                    f"{p}: expected a list of c2w matrices, an object with key 'c2w' or 'poses', or a "
                    f"trajectory file recapture.cameras reads{why}"
                )
            obj = obj[key]
        return _as_c2w(np.asarray(obj, dtype=np.float64), str(p))
    other = _read_with_cameras(p)
    if other is not None:
        return other
    raise RecaptureError(f"unknown pose file type {p.suffix!r} for {p}; use COLMAP images.txt, .json or .npy")


def _read_with_cameras(path: Path) -> Tensor | None:
    """Other trajectory formats (nerfstudio, ReCamMaster, ...) through ``recapture.cameras`` if present.

    Those readers return poses relative to the first camera, which the camera metrics use anyway.
    """
    try:
        from recapture.cameras.formats import load_trajectory
    except ImportError:
        return None
    return load_trajectory(path).c2w.double()


@register_metric(*CAMERA_KEYS, inputs=("pred_c2w", "target_c2w"), aliases=("camera",))
class CameraAccuracy(MergeableMetric):
    """Mean over videos of RotErr, TransErr and CamMC (see :func:`camera_errors`).

    ``update(pred_c2w, target_c2w)`` takes one video's ``(N, 4, 4)`` trajectories, or batches
    ``(B, N, 4, 4)``; ``compute()`` returns ``{"rot_err", "trans_err", "cammc"}``.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, normalize: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize
        for key in CAMERA_KEYS:
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_c2w: Tensor, target_c2w: Tensor) -> None:
        """Add one trajectory pair (``(N, 4, 4)``) or a batch (``(B, N, 4, 4)``)."""
        pred = pred_c2w if pred_c2w.ndim == 4 else pred_c2w[None]
        target = target_c2w if target_c2w.ndim == 4 else target_c2w[None]
        for p, t in zip(pred, target, strict=True):
            errs = camera_errors(p, t, self.normalize)
            for key in CAMERA_KEYS:
                setattr(self, key, getattr(self, key) + errs[key])
            self.count += 1

    def compute(self) -> dict[str, Tensor]:
        """Return the mean of each error over the videos seen."""
        n = self.count.clamp(min=1)
        return {key: getattr(self, key) / n for key in CAMERA_KEYS}
