"""Precomputed depth from ``.npy`` / ``.npz`` files (ground truth, video-depth models)."""

from __future__ import annotations

import dataclasses
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recapture.depth.align import align_depth_scales, disparity_to_depth
from recapture.depth.base import DepthSource, check_depth, check_frames
from recapture.utils import RecaptureError, hash_inputs

log = logging.getLogger(__name__)

__all__ = ["FileDepth", "FileDepthSource", "distance_to_depth", "load_depth_array"]


def distance_to_depth(distance: Tensor, K: Tensor) -> Tensor:
    """Convert Euclidean distance to the camera centre into planar depth ``z``.

    Pixel ``(u, v)`` (integer indices are pixel centres, as in kornia) looks along
    ``r = ((u - cx) / fx, (v - cy) / fy, 1)``, so ``z = distance / |r|``.

    Args:
        distance: ``(T, 1, H, W)``.
        K: intrinsics ``(3, 3)`` or ``(T, 3, 3)`` in pixels.

    Returns:
        planar depth ``(T, 1, H, W)``.
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


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_RESAVE = "re-export it with np.save(path, depth.astype(np.float32)) (or np.savez(path, depth=...))"


def _not_numpy(where: str, head: bytes, what: str) -> RecaptureError:
    """The error for a file (or archive member) whose first bytes ``head`` are not ``what``."""
    if head.startswith(b"version https://git-lfs"):
        return RecaptureError(
            f"depth file {where} is a Git LFS pointer, not the data; run `git lfs pull` to fetch it"
        )
    start = f"starts with {head[:16]!r}" if head else "is empty"
    return RecaptureError(f"depth file {where} is not {what} (it {start}); {_RESAVE}")


def _read_npy(fp: BinaryIO, where: str) -> np.ndarray:
    """Read one ``.npy`` stream without ever unpickling: numeric dtypes only, size checked.

    Args:
        fp: binary stream positioned at the ``.npy`` magic (a file or a zip member).
        where: the file (and archive member) named in errors.

    Returns:
        the array, of the shape and numeric dtype written in the header.
    """
    head = fp.read(len(_NPY_MAGIC))
    if head != _NPY_MAGIC:
        raise _not_numpy(where, head + fp.read(26), "a NumPy .npy array")
    version = fp.read(2)
    fmt = np.lib.format
    readers = {b"\x01\x00": fmt.read_array_header_1_0, b"\x02\x00": fmt.read_array_header_2_0}
    if version not in readers:
        raise RecaptureError(
            f"depth file {where} uses .npy format version {tuple(version)}, which recapture does not read; "
            f"{_RESAVE}"
        )
    try:  # the header is a Python literal read with ast.literal_eval: nothing is executed
        shape, fortran, dtype = readers[version](fp)
    except (ValueError, EOFError, SyntaxError) as err:
        raise RecaptureError(f"depth file {where} has a damaged .npy header ({err}); {_RESAVE}") from err
    if dtype.hasobject:  # loading it would unpickle, i.e. run code from the file: never do that
        raise RecaptureError(
            f"depth file {where} holds a pickled object array (dtype {dtype}), which is refused for safety; "
            f"{_RESAVE}"
        )
    if dtype.kind not in "iuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise RecaptureError(f"depth file {where} holds dtype {dtype}, not numbers; {_RESAVE}")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    data = bytearray(nbytes)  # writable, unlike fp.read(): the array owns its memory
    view, got = memoryview(data), 0
    while got < nbytes:
        n = fp.readinto(view[got:])
        if not n:
            raise RecaptureError(
                f"depth file {where} is truncated: its header promises shape {tuple(shape)} {dtype} ({nbytes} "
                f"bytes) but only {got} bytes follow (an interrupted export?); {_RESAVE}"
            )
        got += n
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)


def _read_npz(path: Path) -> np.ndarray:
    """The ``depth`` array (or the only array) of an ``.npz`` archive, read with :func:`_read_npy`."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {(n[:-4] if n.endswith(".npy") else n): n for n in archive.namelist()}
            if "depth" in members:
                key = "depth"
            elif len(members) == 1:
                key = next(iter(members))
            else:
                raise RecaptureError(
                    f"depth file {path} holds arrays {sorted(members)}; name the depth array 'depth' or keep "
                    "only one"
                )
            with archive.open(members[key]) as fp:
                return _read_npy(fp, f"{path} (array {key!r})")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as err:
        raise RecaptureError(
            f"depth file {path} is a damaged or truncated .npz archive ({err}); {_RESAVE}"
        ) from err


def load_depth_array(path: str | Path) -> np.ndarray:
    """Read a ``(T, H, W)`` array from ``.npy`` or ``.npz`` (key ``depth`` or the only array).

    Files are recognised by their content (NumPy magic or zip signature), never unpickled: object
    arrays, non-numeric dtypes, truncated or foreign files raise :class:`RecaptureError`.

    Args:
        path: a ``.npy`` or ``.npz`` file; ``(T, H, W)`` or ``(T, 1, H, W)`` numbers.

    Returns:
        ``(T, H, W)`` array in the file's dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise RecaptureError(f"depth file {path} does not exist; set depth.path to a .npy/.npz file")
    if path.suffix not in (".npy", ".npz"):
        raise RecaptureError(f"depth file {path} must be .npy or .npz, got {path.suffix!r}")
    try:
        with open(path, "rb") as fp:
            head = fp.read(32)
            fp.seek(0)
            if head.startswith(_NPY_MAGIC):
                arr = _read_npy(fp, str(path))
            elif not head.startswith(_ZIP_MAGICS):
                raise _not_numpy(str(path), head, "NumPy .npy/.npz data")
    except OSError as err:
        raise RecaptureError(
            f"cannot read depth file {path} ({err}); check the path and its permissions"
        ) from err
    if head.startswith(_ZIP_MAGICS):  # an .npz archive (whatever its suffix says)
        arr = _read_npz(path)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise RecaptureError(f"depth file {path} holds an array of shape {arr.shape}; expected (T, H, W)")
    return arr


@dataclass
class FileDepthSource(DepthSource):
    """Precomputed depth from a ``.npy`` / ``.npz`` file (ground truth, video-depth models).

    Selected with ``--data.depth FileDepthSource --data.depth.path depth.npy`` (or
    ``class_path: FileDepthSource`` with ``init_args: {path: ...}`` under ``depth:``). Uses the shared
    ``disparity_mapping`` and ``align``.

    Attributes:
        path: the ``.npy``/``.npz`` file with a ``(T, H, W)`` array (one map per source frame).
        kind: what the file holds: planar ``depth``, Euclidean ``distance`` to the camera centre, or
            ``disparity``.
        units: multiply the stored values by this (0.001 for millimetres).
    """

    path: str | None = None
    kind: Literal["depth", "distance", "disparity"] = "depth"
    units: float = 1.0

    def build(self, fov_deg: float | None = None, device: torch.device | str | None = None) -> FileDepth:
        """The :class:`FileDepth` reading :attr:`path` (``fov_deg`` for ``kind: distance``; ``device`` unused)."""
        return FileDepth(self, fov_deg=fov_deg)


class FileDepth:
    """Depth read from a file, with explicit units and kind.

    Args:
        config: uses ``path``, ``kind``, ``units``, ``disparity_mapping`` and ``align``.
        fov_deg: horizontal field of view used to build K for ``kind="distance"``.
        K: intrinsics ``(3, 3)`` or ``(T, 3, 3)``; overrides ``fov_deg``.
    """

    is_prior = False

    def __init__(self, config: FileDepthSource, fov_deg: float | None = None, K: Tensor | None = None) -> None:
        if config.path is None:
            raise RecaptureError("data.depth is FileDepthSource but data.depth.path is not set; give a .npy/.npz file")
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
            frames: ``(T, 3, H, W)``.

        Returns:
            planar depth ``(T, 1, H, W)`` in file units times ``units``.
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
