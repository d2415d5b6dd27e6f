"""Precomputed depth from ``.npy`` / ``.npz`` files (ground truth, video-depth models)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recapture.depth.align import align_depth_scales, disparity_to_depth
from recapture.depth.base import DepthConfig, check_depth, check_frames
from recapture.utils import RecaptureError, hash_inputs

log = logging.getLogger(__name__)

__all__ = ["FileDepth", "distance_to_depth", "load_depth_array"]


def distance_to_depth(distance: Tensor, K: Tensor) -> Tensor:
    """Convert Euclidean distance to the camera centre into planar depth ``z``.

    Pixel ``(u, v)`` (integer indices are pixel centres, as in kornia) looks along
    ``r = ((u - cx) / fx, (v - cy) / fy, 1)``, so ``z = distance / |r|``.

    Args:
        distance: :math:`(T, 1, H, W)`.
        K: intrinsics :math:`(3, 3)` or :math:`(T, 3, 3)` in pixels.

    Returns:
        planar depth :math:`(T, 1, H, W)`.
    """
    t, _, h, w = distance.shape
    K = K.to(distance.device, distance.dtype)
    K = K.expand(t, 3, 3) if K.ndim == 2 else K
    v, u = torch.meshgrid(
        torch.arange(h, device=distance.device, dtype=distance.dtype),
        torch.arange(w, device=distance.device, dtype=distance.dtype),
        indexing="ij",
    )
    fx, fy, cx, cy = (K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2])
    x = (u[None] - cx[:, None, None]) / fx[:, None, None]
    y = (v[None] - cy[:, None, None]) / fy[:, None, None]
    norm = torch.sqrt(1 + x**2 + y**2)
    return distance / norm[:, None]


def load_depth_array(path: str | Path) -> np.ndarray:
    """Read a ``(T, H, W)`` array from ``.npy`` or ``.npz`` (key ``depth`` or the only array)."""
    path = Path(path)
    if not path.is_file():
        raise RecaptureError(f"depth file {path} does not exist; set depth.path to a .npy/.npz file")
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "depth" in keys:
                arr = z["depth"]
            elif len(keys) == 1:
                arr = z[keys[0]]
            else:
                raise RecaptureError(
                    f"depth file {path} holds arrays {keys}; name the depth array 'depth' or keep only one"
                )
    else:
        raise RecaptureError(f"depth file {path} must be .npy or .npz, got {path.suffix!r}")
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise RecaptureError(f"depth file {path} holds an array of shape {arr.shape}; expected (T, H, W)")
    return arr


class FileDepth:
    """Depth read from a file, with explicit units and kind.

    Args:
        config: uses ``path``, ``kind``, ``units``, ``disparity_mapping`` and ``align``.
        fov_deg: horizontal field of view used to build K for ``kind="distance"``.
        K: intrinsics :math:`(3, 3)` or :math:`(T, 3, 3)`; overrides ``fov_deg``.
    """

    is_prior = False

    def __init__(self, config: DepthConfig, fov_deg: float | None = None, K: Tensor | None = None) -> None:
        if config.path is None:
            raise RecaptureError("depth.backend is 'file' but depth.path is not set; give a .npy/.npz file")
        if config.units <= 0:
            raise RecaptureError(f"depth.units must be > 0, got {config.units}")
        self.config, self.fov_deg, self.K = config, fov_deg, K
        self.path = Path(config.path)
        self.name = f"file:{self.path.name}"
        if config.kind == "distance" and K is None and fov_deg is None:
            raise RecaptureError(
                "depth.kind is 'distance', which needs the camera intrinsics: pass fov_deg (anchor.fov_deg) or K"
            )

    @property
    def cache_token(self) -> object:
        c = dataclasses.asdict(self.config)
        keys = ("kind", "units", "disparity_mapping", "align")
        return {"file": hash_inputs(self.path), "fov": self.fov_deg, "K": self.K, **{k: c[k] for k in keys}}

    def _intrinsics(self, height: int, width: int) -> Tensor:
        if self.K is not None:
            return self.K.float()
        from recapture.cameras import intrinsics_from_fov

        return intrinsics_from_fov(self.fov_deg, height, width)

    def __call__(self, frames: Tensor) -> Tensor:
        """Load, resize to the frames, convert to planar depth and check it.

        Args:
            frames: :math:`(T, 3, H, W)`.

        Returns:
            planar depth :math:`(T, 1, H, W)` in file units times ``units``.
        """
        check_frames(frames)
        t, _, h, w = frames.shape
        arr = load_depth_array(self.path)
        if arr.shape[0] != t:
            raise RecaptureError(
                f"depth file {self.path} has {arr.shape[0]} frames but the video has {t}; export depth "
                "for exactly the frames used (same sampling / frame count)"
            )
        values = torch.from_numpy(arr.astype(np.float32))[:, None] * self.config.units
        if not bool(torch.isfinite(values).all()):
            bad = (~torch.isfinite(values)).flatten(1).any(1).nonzero().flatten().tolist()
            raise RecaptureError(
                f"depth file {self.path} has NaN/inf values in frames {bad[:10]}; fix the file"
            )
        if values.shape[-2:] != (h, w):
            down = values.shape[-2] > h or values.shape[-1] > w
            values = F.interpolate(values, size=(h, w), mode="bilinear", align_corners=False, antialias=down)
        kind = self.config.kind
        if kind == "disparity":
            depth = disparity_to_depth(values, self.config.disparity_mapping)
        else:
            check_depth(values)
            depth = distance_to_depth(values, self._intrinsics(h, w)) if kind == "distance" else values
        if self.config.align if self.config.align is not None else kind == "disparity":
            depth = align_depth_scales(depth)
        check_depth(depth, frames)
        log.info("depth: %s (%s, units %g) -> %s", self.path, kind, self.config.units, tuple(depth.shape))
        return depth.to(frames.device)
