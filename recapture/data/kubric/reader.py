"""Reader for Kubric-4D scenes as released by GCD (benchmarks spec 1.2-1.3).

Layout of one scene::

    <root>/scnXXXXX/
      scnXXXXX_p0_v{V}.json           per-view metadata, V = 0..15
      frames_p0_v{V}/
        rgba_{t:05d}.png              8-bit RGBA (channels 0..2 used)
        depth_{t:05d}.tiff            float32 Euclidean distance to the camera centre (metres)
        segmentation_{t:05d}.png      8-bit palette PNG, palette index = instance id (0 = background)

Everything returned follows recapture's conventions: video ``(N, 3, H, W)`` float in [0, 1], planar
depth ``(N, 1, H, W)``, OpenCV camera-to-world poses, ``K`` in pixels.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recapture.data.kubric.geometry import (
    NUM_VIEWS,
    DepthConversion,
    distance_to_planar,
    kubric_intrinsics,
    kubric_to_opencv_c2w,
)
from recapture.utils import RecaptureError

__all__ = ["KubricScene", "load_scene", "scene_name", "view_metadata_path", "frame_path"]

_FRAME_FILES = {
    "rgba": "rgba_{t:05d}.png",
    "depth": "depth_{t:05d}.tiff",
    "segmentation": "segmentation_{t:05d}.png",
}
_EXPECTED = {
    "rgba": "an 8-bit RGBA PNG",
    "depth": "a float32 TIFF of Euclidean depth in metres",
    "segmentation": "an 8-bit palette PNG of instance ids",
}


def scene_name(scene_id: str | int) -> str:
    """Normalise a scene id: ``2900``, ``"2900"`` or ``"scn02900"`` -> ``"scn02900"``."""
    if isinstance(scene_id, bool):
        raise RecaptureError(f"scene_id={scene_id!r} is not a scene; pass e.g. 'scn02900' or 2900")
    if isinstance(scene_id, int) or (isinstance(scene_id, str) and scene_id.isdigit()):
        return f"scn{int(scene_id):05d}"
    if isinstance(scene_id, str) and scene_id.startswith("scn") and scene_id[3:].isdigit():
        return scene_id
    raise RecaptureError(f"scene_id={scene_id!r} is not a Kubric-4D scene id; pass e.g. 'scn02900' or 2900")


def view_metadata_path(scene_dir: Path, view: int) -> Path:
    """``<scene_dir>/<scn>_p0_v{view}.json``."""
    return scene_dir / f"{scene_dir.name}_p0_v{view}.json"


def frame_path(scene_dir: Path, view: int, kind: str, t: int) -> Path:
    """Path of one frame file; ``kind`` is ``"rgba"``, ``"depth"`` or ``"segmentation"``."""
    if kind not in _FRAME_FILES:
        raise RecaptureError(f"frame kind {kind!r} is unknown; use one of {sorted(_FRAME_FILES)}")
    return scene_dir / f"frames_p0_v{view}" / _FRAME_FILES[kind].format(t=t)


def _field(meta: dict[str, Any], dotted: str, path: Path, expected: str) -> Any:
    node: Any = meta
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise RecaptureError(
                f"{path}: field '{dotted}' is missing; expected {expected} (Kubric metadata as written by GCD)"
            )
        node = node[key]
    return node


def _array(value: Any, shape: tuple[int, ...], dotted: str, path: Path, expected: str) -> Tensor:
    try:
        arr = torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise RecaptureError(f"{path}: field '{dotted}' is not numeric; expected {expected}") from err
    if tuple(arr.shape) != shape or not bool(torch.isfinite(arr).all()):
        raise RecaptureError(
            f"{path}: field '{dotted}' has shape {tuple(arr.shape)}; expected {expected} of shape {shape} "
            "with finite values"
        )
    return arr


@dataclass(frozen=True)
class ViewCameras:
    """One view's cameras: ``c2w`` ``(T, 4, 4)`` OpenCV float64 and pixel ``K`` ``(3, 3)`` float64."""

    c2w: Tensor
    K: Tensor
    K_normalised: Tensor


def _parse_view(meta: dict[str, Any], path: Path) -> tuple[tuple[int, int], int, float, ViewCameras]:
    res = _field(meta, "scene.resolution", path, "[W, H] in pixels")
    if not (
        isinstance(res, (list, tuple)) and len(res) == 2 and all(isinstance(x, int) and x > 0 for x in res)
    ):
        raise RecaptureError(
            f"{path}: field 'scene.resolution' is {res!r}; expected [W, H] positive integers"
        )
    width, height = int(res[0]), int(res[1])
    num_frames = _field(meta, "scene.num_frames", path, "the number of frames (int)")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise RecaptureError(
            f"{path}: field 'scene.num_frames' is {num_frames!r}; expected a positive integer"
        )
    fps = _field(meta, "scene.frame_rate", path, "frames per second")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise RecaptureError(f"{path}: field 'scene.frame_rate' is {fps!r}; expected a positive number")
    pos = _array(
        _field(meta, "camera.positions", path, "num_frames [x, y, z] camera positions"),
        (num_frames, 3),
        "camera.positions",
        path,
        "num_frames [x, y, z] positions",
    )
    quat = _array(
        _field(meta, "camera.quaternions", path, "num_frames [w, x, y, z] camera quaternions"),
        (num_frames, 4),
        "camera.quaternions",
        path,
        "num_frames [w, x, y, z] quaternions",
    )
    if bool((quat.norm(dim=-1) < 1e-6).any()):
        raise RecaptureError(
            f"{path}: field 'camera.quaternions' has a zero quaternion; expected unit (w, x, y, z)"
        )
    K_norm = _array(
        _field(meta, "camera.K", path, "the normalised 3x3 intrinsics"),
        (3, 3),
        "camera.K",
        path,
        "normalised Blender-signed intrinsics",
    )
    cams = ViewCameras(kubric_to_opencv_c2w(pos, quat), kubric_intrinsics(K_norm, height, width), K_norm)
    return (height, width), num_frames, float(fps), cams


@dataclass
class KubricScene:
    """One Kubric-4D scene on disk: metadata of every view loaded, frames read on demand.

    Attributes:
        path: the scene folder ``<root>/scnXXXXX``.
        scene_id: ``"scnXXXXX"``.
        views: the view indices loaded (0..15).
        metadata: raw JSON per view.
        size: ``(H, W)`` of the frames.
        num_frames: frames per view (60 in the dataset).
        fps: the scene frame rate (24).
    """

    path: Path
    scene_id: str
    views: tuple[int, ...]
    metadata: dict[int, dict[str, Any]] = field(repr=False)
    size: tuple[int, int]
    num_frames: int
    fps: float
    _cameras: dict[int, ViewCameras] = field(repr=False)

    def _view(self, view: int) -> ViewCameras:
        if view not in self._cameras:
            raise RecaptureError(
                f"view {view} of {self.scene_id} was not loaded; loaded views: {list(self.views)}"
            )
        return self._cameras[view]

    def c2w(self, view: int) -> Tensor:
        """OpenCV camera-to-world poses of ``view`` over time, ``(T, 4, 4)`` float64."""
        return self._view(view).c2w

    def intrinsics(self, view: int, size: tuple[int, int] | None = None) -> Tensor:
        """Pixel ``K`` ``(3, 3)`` float64 of ``view`` for images of ``size`` ``(H, W)`` (default: the frames')."""
        if size is None:
            return self._view(view).K
        return kubric_intrinsics(self._view(view).K_normalised, int(size[0]), int(size[1]))

    def _frames(self, frames: int | Iterable[int] | None) -> list[int]:
        if frames is None:
            return list(range(self.num_frames))
        if isinstance(frames, Tensor):
            frames = frames.reshape(-1).tolist()
        items = [frames] if isinstance(frames, (int, np.integer)) else list(frames)
        out = []
        for t in items:
            try:
                index = operator.index(t) if not isinstance(t, bool) else None
            except TypeError:
                index = None
            if index is None or not 0 <= index < self.num_frames:
                raise RecaptureError(
                    f"frame {t!r} is out of range for {self.scene_id}: it has num_frames={self.num_frames} "
                    f"(t = 0..{self.num_frames - 1})"
                )
            out.append(index)
        return out

    def _file(self, view: int, kind: str, t: int) -> Path:
        self._view(view)
        path = frame_path(self.path, view, kind, t)
        if not path.is_file():
            raise RecaptureError(
                f"frame file {path} does not exist; expected {_EXPECTED[kind]} for view {view}, frame {t} "
                f"(scene has num_frames={self.num_frames}). Is the download of {self.scene_id} complete?"
            )
        return path

    def _check_size(self, array: np.ndarray, path: Path) -> None:
        if tuple(array.shape[:2]) != self.size:
            raise RecaptureError(
                f"{path} is {array.shape[1]}x{array.shape[0]} (WxH); the metadata says "
                f"{self.size[1]}x{self.size[0]}"
            )

    def read_rgb(self, view: int, frames: int | Iterable[int] | None = None) -> Tensor:
        """RGB of ``view`` at ``frames`` (default all): ``(N, 3, H, W)`` float32 in [0, 1]."""
        from PIL import Image

        out = []
        for t in self._frames(frames):
            path = self._file(view, "rgba", t)
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGBA") if img.mode not in ("RGBA", "RGB") else img)
            self._check_size(arr, path)
            out.append(torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1))
        return torch.stack(out).float() / 255.0

    def read_distance(self, view: int, frames: int | Iterable[int] | None = None) -> Tensor:
        """Raw Euclidean depth (distance to the camera centre, metres): ``(N, 1, H, W)`` float32."""
        import tifffile

        out = []
        for t in self._frames(frames):
            path = self._file(view, "depth", t)
            try:
                arr = np.asarray(tifffile.imread(path), dtype=np.float32)
            except Exception as err:  # tifffile raises several types for corrupt files
                raise RecaptureError(
                    f"{path} is not a readable TIFF ({err}); expected {_EXPECTED['depth']}"
                ) from err
            if arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if arr.ndim != 2:
                raise RecaptureError(
                    f"{path} has shape {arr.shape}; expected {_EXPECTED['depth']} of shape (H, W)"
                )
            self._check_size(arr, path)
            out.append(torch.from_numpy(arr.copy())[None])
        return torch.stack(out)

    def read_depth(
        self, view: int, frames: int | Iterable[int] | None = None, conversion: DepthConversion = "exact"
    ) -> Tensor:
        """Planar depth z (metres) of ``view``: ``(N, 1, H, W)`` float32.

        Args:
            view: camera index.
            frames: frame indices (default all).
            conversion: ``"exact"`` (spec formula) or ``"gcd"`` (GCD's linear-angle approximation).
        """
        return distance_to_planar(self.read_distance(view, frames), self.intrinsics(view).float(), conversion)

    def read_segmentation(self, view: int, frames: int | Iterable[int] | None = None) -> Tensor:
        """Instance ids (palette indices, 0 = background): ``(N, 1, H, W)`` int64."""
        from PIL import Image

        out = []
        for t in self._frames(frames):
            path = self._file(view, "segmentation", t)
            with Image.open(path) as img:
                if img.mode != "P":
                    raise RecaptureError(
                        f"{path} has PIL mode {img.mode!r}; expected {_EXPECTED['segmentation']} (mode 'P')"
                    )
                arr = np.asarray(img)
            self._check_size(arr, path)
            out.append(torch.from_numpy(arr.astype(np.int64))[None])
        return torch.stack(out)


def load_scene(
    root: str | os.PathLike, scene_id: str | int, views: Sequence[int] = tuple(range(NUM_VIEWS))
) -> KubricScene:
    """Open a Kubric-4D scene: read and check the metadata JSON of ``views`` (frames are read lazily).

    Args:
        root: dataset root holding ``scnXXXXX`` folders.
        scene_id: ``"scn02900"`` or ``2900``.
        views: views to load (default all 16; the GCD protocol needs all of them).

    Returns:
        A :class:`KubricScene`.

    Raises:
        RecaptureError: a missing scene folder, view JSON or field, or views that disagree on
            resolution or frame count.
    """
    name = scene_name(scene_id)
    scene_dir = Path(root) / name
    if not scene_dir.is_dir():
        raise RecaptureError(
            f"scene folder {scene_dir} does not exist; expected <root>/{name}/ with {name}_p0_v{{0..15}}.json "
            "and frames_p0_v{0..15}/ (GCD's Kubric-4D layout). Check the dataset root."
        )
    views = tuple(int(v) for v in views)
    if not views or any(not 0 <= v < NUM_VIEWS for v in views):
        raise RecaptureError(
            f"views={list(views)} must be a non-empty list of view indices in 0..{NUM_VIEWS - 1}"
        )
    metadata: dict[int, dict[str, Any]] = {}
    cameras: dict[int, ViewCameras] = {}
    ref: tuple[Any, ...] | None = None
    for v in views:
        path = view_metadata_path(scene_dir, v)
        if not path.is_file():
            raise RecaptureError(
                f"view metadata {path} does not exist; expected one JSON per view ({name}_p0_v0.json .. "
                f"{name}_p0_v15.json). Is the download of {name} complete?"
            )
        try:
            meta = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RecaptureError(f"{path} is not valid JSON ({err}); re-extract the scene") from err
        size, num_frames, fps, cams = _parse_view(meta, path)
        if ref is None:
            ref = (size, num_frames, fps, path)
        elif (size, num_frames, fps) != ref[:3]:
            raise RecaptureError(
                f"{path} says size={size}, num_frames={num_frames}, fps={fps} but {ref[3].name} says "
                f"size={ref[0]}, num_frames={ref[1]}, fps={ref[2]}; all views of a scene must agree"
            )
        metadata[v], cameras[v] = meta, cams
    assert ref is not None
    return KubricScene(scene_dir, name, views, metadata, ref[0], ref[1], ref[2], cameras)
