"""The :class:`Video` container, :func:`read_video` and :func:`probe_video`."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from recapture.io import _decode
from recapture.io.resize import ResizeMode, ResizePlan, _check_size, apply_resize, plan_resize
from recapture.utils import RecaptureError, check_video

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
        source_num_frames: frames in the whole file or folder (``frames`` may be a selection).
    """

    frames: torch.Tensor
    fps: float
    path: Path | None = None
    source_size: tuple[int, int] | None = None
    source_num_frames: int | None = None

    def __post_init__(self) -> None:
        check_video(self.frames, "Video.frames")
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


class _ResizingSink:
    """Receives decoded frames one at a time and stores them resized, in a preallocated tensor.

    The plan is made from the first frame's real pixel size (PyAV may apply a display size the
    header did not state), so at most one source-size frame is alive at a time.
    """

    def __init__(
        self, count: int, size: int | tuple[int, int] | None, resize: ResizeMode, multiple: int, path: Path
    ):
        self.count, self.size, self.resize, self.multiple, self.path = count, size, resize, multiple, path
        self.plan: ResizePlan | None = None
        self.frames: torch.Tensor | None = None
        self.filled = 0

    def __call__(self, k: int, image: np.ndarray) -> None:
        hw = (int(image.shape[0]), int(image.shape[1]))
        if self.plan is None or (k == 0 and hw != self.plan.source):  # first frame (or a decoder restart)
            self.plan = plan_resize(*hw, self.size, self.resize, self.multiple)
            self.frames = torch.empty(self.count, 3, *self.plan.output, dtype=torch.float32)
        elif hw != self.plan.source:
            h, w = self.plan.source
            raise RecaptureError(
                f"{self.path}: frame {k} of the selection is {hw[1]}x{hw[0]} but earlier frames are {w}x{h}; "
                "re-encode the video to one frame size"
            )
        assert self.frames is not None
        # PIL and decord hand out read-only arrays; torch wants writable memory (a copy of one frame)
        chw = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)[None]
        self.frames[k] = apply_resize(chw, self.plan)[0]
        self.filled = max(self.filled, k + 1)

    def result(self) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(frames (T, 3, H', W') float32, source (H, W))`` once every frame has arrived."""
        assert self.frames is not None and self.plan is not None and self.filled == self.count
        message = self.plan.upscale_message()
        if message:
            logger.warning("%s: %s", self.path, message)
        return self.frames, self.plan.source


def read_video(
    path: str | os.PathLike,
    num_frames: int | None = None,
    start: int = 0,
    stride: int = 1,
    size: int | tuple[int, int] | None = None,
    resize: ResizeMode = "crop",
    multiple: int = 64,
    backend: Backend = "auto",
    fps: float | None = None,
) -> Video:
    """Read frames ``start, start + stride, ...`` of a video file or image folder, optionally resized.

    Files: mp4/mov/avi/webm/mkv/m4v via decord (fast, random access), whose output is validated
    (shape ``(H, W, 3)``, frame count) with an automatic fall back to PyAV; gif via PyAV, and
    so are videos above 2560x1440 with ``backend="auto"`` (decord's buffers cost ~0.4 GB at 4K).
    Folders: png/jpg/jpeg/bmp/tif/tiff images sorted naturally (``2.png`` before ``10.png``), all
    of one size. Only the selected frames are decoded (PyAV stops after the last one) and each is
    resized as soon as it is decoded, so memory is the output clip plus about one source frame
    (14 frames of a 4K video at ``size=192``: a 14x3x128x192 clip and one 4K frame at a time).

    Resizing never distorts (rules and arithmetic: :func:`recapture.io.resize.plan_resize`):

    * ``size=None``: keep the stored size (for SVD it must already be a multiple of 64).
    * ``size=int``: the **long** side becomes ``size`` (rounded to a multiple of ``multiple``);
      the short side is scaled by the same factor and rounded to the nearest multiple of
      ``multiple`` (halves up, at least one multiple). With ``"crop"`` (default) the picture is
      scaled just enough to cover that size and the overflow is cut equally from both ends
      (1280x720 at 512 -> 512x320, 57 columns cut; 640x272 at 192 -> 192x64, 18 rows cut);
      with ``"pad"`` it is scaled to fit inside and black bars fill the rest.
    * ``size=(H, W)``: exactly ``(H, W)``, by the same crop or pad (``multiple`` unused).

    Enlarging (e.g. 40x30 at 192 -> 192x128, 4.8x) is done but logged as a warning naming the
    factor, since it invents detail.

    Args:
        path: video file or folder of images.
        num_frames: frames to return; ``None`` = all remaining.
        start: index of the first frame.
        stride: step between returned frames (the returned ``fps`` is the stored rate regardless).
        size: output size rule (above).
        resize: ``"crop"`` (cover and centre-crop) or ``"pad"`` (fit inside and pad with black).
        multiple: rounding multiple for an int ``size`` (64 suits SVD).
        backend: ``"auto"`` (decord, then PyAV; PyAV above 2560x1440), ``"decord"`` (falls back to
            PyAV with a warning) or ``"pyav"``.
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
        _decode.check_same_size(files)
        total = len(files)
        indices = select_indices(total, start, stride, num_frames, path)
        sink = _ResizingSink(len(indices), size, resize, multiple, path)
        _decode.decode_images([files[i] for i in indices], sink)
        rate = float(fps or DEFAULT_FOLDER_FPS)
    else:
        info = _decode.probe_container(path)
        total = int(info["num_frames"])
        rate = float(fps or info["fps"] or DEFAULT_FOLDER_FPS)
        indices = select_indices(total, start, stride, num_frames, path)
        sink = _ResizingSink(len(indices), size, resize, multiple, path)
        done = False
        pixels = int(info["height"]) * int(info["width"])
        use_decord = backend == "decord" or (backend == "auto" and pixels <= _decode.DECORD_MAX_PIXELS)
        if use_decord and path.suffix.lower() != ".gif":
            done = _decode.decode_decord(path, indices, info["height"], info["width"], sink)
            if not done and backend == "decord":
                logger.warning("decord could not read %s correctly: fell back to PyAV", path)
        if not done:
            frames_seen = _decode.decode_pyav(path, indices, sink)
            if frames_seen is not None:  # the header over-counted: report the real count
                select_indices(frames_seen, start, stride, num_frames, path)
                raise RecaptureError(f"{path} ended after {frames_seen} frames while decoding; re-encode it")
    # source_size: what the decoder delivered (e.g. PyAV applying a display size): trust the pixels
    frames, source_size = sink.result()
    return Video(frames=frames, fps=rate, path=path, source_size=source_size, source_num_frames=total)
