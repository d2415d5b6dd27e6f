"""The :class:`Video` container, :func:`read_video` and :func:`probe_video`."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from recapture.io import _decode
from recapture.io.resize import ResizeMode, _check_size, resize_frames
from recapture.utils import RecaptureError

logger = logging.getLogger(__name__)

DEFAULT_FOLDER_FPS = 24.0
Backend = Literal["auto", "decord", "pyav"]


@dataclass
class Video:
    """Frames of a video with its frame rate and where it came from.

    Args:
        frames: ``(T, 3, H, W)`` float32 in [0, 1].
        fps: frames per second (after frame selection: a ``stride`` does not change it).
        path: the file or folder it was read from, if any.
        source_size: ``(H, W)`` as stored (after a phone video's display rotation), before resizing.
    """

    frames: torch.Tensor
    fps: float
    path: Path | None = None
    source_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.frames, torch.Tensor) or self.frames.ndim != 4 or self.frames.shape[1] != 3:
            shape = (
                tuple(self.frames.shape)
                if isinstance(self.frames, torch.Tensor)
                else type(self.frames).__name__
            )
            raise RecaptureError(f"Video.frames must be a (T, 3, H, W) tensor, got {shape}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise RecaptureError(f"Video.fps must be a positive number, got {self.fps!r}")

    @property
    def num_frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        """Frame height ``H`` in pixels."""
        return int(self.frames.shape[2])

    @property
    def width(self) -> int:
        """Frame width ``W`` in pixels."""
        return int(self.frames.shape[3])


def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise RecaptureError(f"{path} does not exist; check the path (relative paths start at {Path.cwd()})")
    if path.is_file() and path.suffix.lower() not in _decode.VIDEO_EXTENSIONS:
        hint = (
            " (a single image is not a video: put frames in a folder)"
            if path.suffix.lower() in _decode.IMAGE_EXTENSIONS
            else ""
        )
        raise RecaptureError(
            f"{path} has unsupported extension {path.suffix!r}{hint}; use a video "
            f"({', '.join(_decode.VIDEO_EXTENSIONS)}) or a folder of images ({', '.join(_decode.IMAGE_EXTENSIONS)})"
        )
    return path


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecaptureError(f"{name}={value!r} must be an integer >= {minimum}")


def _check_fps(fps: float | None) -> None:
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise RecaptureError(f"fps={fps!r} must be a positive number (or None to use the file's rate)")


def select_indices(total: int, start: int, stride: int, num_frames: int | None, path: Path) -> list[int]:
    """Frame indices ``start, start + stride, ...`` (``num_frames`` of them, or all remaining).

    Raises:
        RecaptureError: the source has no frames or fewer than asked.
    """
    if total <= 0:
        raise RecaptureError(f"{path} has 0 frames; pass a video that contains frames")
    if start >= total:
        raise RecaptureError(f"start={start} is past the end: {path} has {total} frames; use start < {total}")
    available = len(range(start, total, stride))
    if num_frames is None:
        num_frames = available
    elif num_frames > available:
        raise RecaptureError(
            f"asked for {num_frames} frames from start {start} with stride {stride} but {path} has {total} "
            f"frames: only {available} are available; lower num_frames or stride"
        )
    return list(range(start, start + stride * num_frames, stride))


def probe_video(path: str | os.PathLike, fps: float | None = None) -> dict[str, Any]:
    """Frame count, fps and size of a video file or image folder, without decoding the frames.

    Args:
        path: a video file or a folder of images.
        fps: override the frame rate (folders have none: default 24).

    Returns:
        ``{"num_frames", "fps", "height", "width", "kind"}``; ``kind`` is ``"video"`` or ``"images"``;
        video files also give ``"rotation"`` (display rotation in degrees, counter-clockwise,
        already applied to ``height``/``width``) and ``"codec"``.
    """
    _check_fps(fps)
    path = _resolve(path)
    if path.is_dir():
        files = _decode.list_images(path)
        height, width = _decode.image_size(files[0])
        return {
            "num_frames": len(files),
            "fps": float(fps or DEFAULT_FOLDER_FPS),
            "height": height,
            "width": width,
            "kind": "images",
        }
    info = _decode.probe_container(path)
    info["fps"] = float(fps or info["fps"] or DEFAULT_FOLDER_FPS)
    info["kind"] = "video"
    return info


def read_video(
    path: str | os.PathLike,
    num_frames: int | None = None,
    start: int = 0,
    stride: int = 1,
    size: int | tuple[int, int] | None = None,
    resize: ResizeMode = "fit",
    multiple: int = 64,
    backend: Backend = "auto",
    fps: float | None = None,
) -> Video:
    """Read frames ``start, start + stride, ...`` of a video file or image folder, optionally resized.

    Files: mp4/mov/avi/webm/mkv/m4v via decord (fast, random access), whose output is validated
    (shape ``(T, H, W, 3)``, frame count) with an automatic fall back to PyAV; gif via PyAV.
    Folders: png/jpg/jpeg/bmp/tif/tiff images sorted naturally (``2.png`` before ``10.png``), all
    of one size. Only the needed frames are decoded (PyAV stops after the last one).

    Resizing (antialiased bilinear, see :func:`recapture.io.resize.target_size`):

    * ``size=None``: keep the stored size.
    * ``size=int``, ``"fit"``: long side = ``size``, aspect kept, each side rounded to the nearest
      multiple of ``multiple`` (1280x720 -> 1024x576 for ``size=1024``).
    * ``size=(H, W)``, ``"fit"``: fit inside ``(H, W)``, then round as above.
    * ``size=(H, W)``, ``"crop"``: scale to cover ``(H, W)`` and centre-crop to exactly ``(H, W)``.

    Args:
        path: video file or folder of images.
        num_frames: frames to return; ``None`` = all remaining.
        start: index of the first frame.
        stride: step between returned frames (the returned ``fps`` is the stored rate regardless).
        size: output size rule (above).
        resize: ``"fit"`` or ``"crop"``.
        multiple: rounding multiple for ``"fit"`` (64 suits SVD).
        backend: ``"auto"`` (decord, then PyAV), ``"decord"`` (falls back to PyAV with a warning)
            or ``"pyav"``.
        fps: override the frame rate; image folders default to 24.

    Returns:
        :class:`Video` with ``frames`` ``(T, 3, H', W')`` float32 in [0, 1].

    Raises:
        RecaptureError: missing path, unsupported or unreadable file, zero frames, fewer frames
            than asked, image folder empty or with mixed sizes, bad arguments.
    """
    _check_int("start", start, 0)
    _check_int("stride", stride, 1)
    if num_frames is not None:
        _check_int("num_frames", num_frames, 1)
    _check_size(size, resize, multiple)
    _check_fps(fps)
    if backend not in ("auto", "decord", "pyav"):
        raise RecaptureError(f"backend={backend!r} is not a backend; use 'auto', 'decord' or 'pyav'")
    path = _resolve(path)

    if path.is_dir():
        files = _decode.list_images(path)
        source_size = _decode.check_same_size(files)
        indices = select_indices(len(files), start, stride, num_frames, path)
        raw = _decode.decode_images([files[i] for i in indices])
        rate = float(fps or DEFAULT_FOLDER_FPS)
    else:
        info = _decode.probe_container(path)
        source_size = (info["height"], info["width"])
        rate = float(fps or info["fps"] or DEFAULT_FOLDER_FPS)
        indices = select_indices(info["num_frames"], start, stride, num_frames, path)
        raw = None
        if backend != "pyav" and path.suffix.lower() != ".gif":
            raw = _decode.decode_decord(path, indices, *source_size)
            if raw is None and backend == "decord":
                logger.warning("decord could not read %s correctly: fell back to PyAV", path)
        if raw is None:
            raw, frames_seen = _decode.decode_pyav(path, indices)
            if frames_seen is not None:  # the header over-counted: report the real count
                select_indices(frames_seen, start, stride, num_frames, path)
                raise RecaptureError(f"{path} ended after {frames_seen} frames while decoding; re-encode it")
        if raw.shape[1:3] != source_size:  # e.g. PyAV applying a display size: trust the pixels
            source_size = (int(raw.shape[1]), int(raw.shape[2]))

    frames = resize_frames(torch.from_numpy(raw).permute(0, 3, 1, 2), size, resize, multiple)
    return Video(frames=frames, fps=rate, path=path, source_size=source_size)
