"""Decoders behind :func:`recapture.io.read_video`: decord, PyAV and folders of images.

Every decoder hands the frames at a sorted list of indices, one ``(H, W, 3)`` uint8 or float32
numpy frame at a time and in order, to a ``sink(k, frame)`` callback (``k`` = position in the
list), so the caller can resize each frame as it arrives and never holds the source-size clip;
:mod:`recapture.io.video` picks a decoder, validates it and falls back to PyAV.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recapture.utils import RecaptureError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DECORD_BATCH_BYTES = 16 * 2**20  # decord decodes this much source-size uint8 at once, at most
# each decord (FFmpeg) decoding thread holds its own frame buffers, ~0.45 GB at 4K: the thread
# count is capped so that threads x pixels stays at about two 1080p frames' worth
DECORD_THREAD_PIXELS = 2 * 1920 * 1080
# above this (1440p) backend="auto" decodes with PyAV: even single-threaded, decord's buffers
# cost ~0.4 GB at 4K where PyAV's sequential decoding needs ~0.2 GB
DECORD_MAX_PIXELS = 2560 * 1440

Sink = Callable[[int, np.ndarray], None]


def natural_key(path: Path) -> list[Any]:
    """Sort key that orders ``frame2.png`` before ``frame10.png``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


# ---------------------------------------------------------------------------------------------
# containers (PyAV)


def _open_container(path: Path) -> Any:
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise RecaptureError(
            f"{path} could not be opened as a video ({err}); check that it is a complete video file "
            f"({', '.join(VIDEO_EXTENSIONS)}) and not another file renamed"
        ) from err


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        raise RecaptureError(f"{path} has no video stream (0 frames); pass a file that contains video")
    return container.streams.video[0]


def _rotation(frame: Any) -> int:
    """Counter-clockwise display rotation of a decoded frame (phone videos), a multiple of 90."""
    degrees = int(round(float(getattr(frame, "rotation", 0) or 0))) % 360
    return degrees - degrees % 90


def _apply_rotation(image: np.ndarray, degrees: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(image, k=degrees // 90)) if degrees else image


def _first_frame_rotation(path: Path) -> int:
    import av

    container = _open_container(path)
    try:
        for frame in container.decode(video=0):
            return _rotation(frame)
    except av.error.FFmpegError:
        pass
    finally:
        container.close()
    return 0


def probe_container(path: Path) -> dict[str, Any]:
    """Frame count, fps and display size of a video file from its headers.

    Packets are counted (no decoding) when the container stores no frame count; the first frame
    is decoded to read the display rotation of phone videos (``height``/``width`` are after it).
    """
    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:  # some containers (webm, mkv, gif) do not store a count: demux, no decode
            num_frames = sum(1 for p in container.demux(stream) if p.size > 0)
        height, width = int(stream.codec_context.height), int(stream.codec_context.width)
        codec = stream.codec_context.name
    except RecaptureError:
        raise
    except Exception as err:  # corrupt headers or packets
        raise RecaptureError(
            f"{path} could not be read as a video ({err}); re-encode it (e.g. to H.264 mp4)"
        ) from err
    finally:
        container.close()
    rotation = _first_frame_rotation(path) if num_frames > 0 else 0
    if rotation in (90, 270):
        height, width = width, height
    return {
        "num_frames": num_frames,
        "fps": float(rate) if rate else None,
        "height": height,
        "width": width,
        "rotation": rotation,
        "codec": codec,
    }


def decode_pyav(path: Path, indices: list[int], sink: Sink) -> int | None:
    """Decode the frames at sorted ``indices`` sequentially into ``sink``, stopping after the last one.

    Returns:
        ``None`` when every index was found, else the number of frames the file really has (the
        frames found so far were already given to ``sink``).
    """
    import av

    wanted = set(indices)
    last = indices[-1]
    found = 0
    container = _open_container(path)
    seen = 0
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            seen = i + 1
            if i in wanted:  # display rotation applied like decord does (counter-clockwise)
                sink(found, _apply_rotation(frame.to_ndarray(format="rgb24"), _rotation(frame)))
                found += 1
            if i >= last:
                break
    except av.error.FFmpegError as err:
        if not found:
            raise RecaptureError(
                f"{path} could not be decoded ({err}); re-encode it (e.g. to H.264 mp4)"
            ) from err
        logger.warning("decoding %s stopped at frame %d: %s", path, seen, err)
    finally:
        container.close()
    return None if found == len(indices) else seen


def decord_threads(height: int, width: int) -> int:
    """Decoding threads for decord: all cores (at most 8) for small frames, 2 at 1080p, 1 above."""
    return max(1, min(os.cpu_count() or 1, 8, DECORD_THREAD_PIXELS // max(1, height * width)))


def decode_decord(
    path: Path, indices: list[int], height: int, width: int, sink: Sink, batch_bytes: int | None = None
) -> bool:
    """Decode ``indices`` with decord into ``sink``; ``False`` (after logging why) if decord fails or misbehaves.

    Frames are fetched in batches of at most ``batch_bytes`` of source-size pixels (``None``:
    :data:`DECORD_BATCH_BYTES`: one batch for a small clip, six 720p frames at a time). decord
    mis-decodes some widths (16, 48, ...) and can return 4 or 6 channels, so each batch's shape
    is checked against the container's ``(len(batch), height, width, 3)`` (display size: decord
    applies the rotation of phone videos). On ``False`` the caller decodes everything again with
    PyAV, so frames already given to ``sink`` are overwritten.
    """
    try:
        import decord
    except ImportError:
        return False
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=decord_threads(height, width))
        if indices[-1] >= len(reader):
            logger.info("decord sees %d frames in %s, fewer than needed: using PyAV", len(reader), path)
            return False
    except Exception as err:  # decord raises its own DECORDError and plain RuntimeErrors
        logger.info("decord failed on %s (%s): using PyAV", path, err)
        return False
    budget = DECORD_BATCH_BYTES if batch_bytes is None else batch_bytes
    per_batch = max(1, budget // max(1, height * width * 3))
    for first in range(0, len(indices), per_batch):
        batch_indices = indices[first : first + per_batch]
        try:
            batch = reader.get_batch(batch_indices).asnumpy()
        except Exception as err:
            logger.info("decord failed on %s (%s): using PyAV", path, err)
            return False
        expected = (len(batch_indices), height, width, 3)
        if tuple(batch.shape) != expected or batch.dtype != np.uint8:
            logger.info(
                "decord returned %s %s for %s, expected %s uint8: using PyAV",
                batch.shape,
                batch.dtype,
                path,
                expected,
            )
            return False
        for j in range(len(batch_indices)):
            sink(first + j, batch[j])
        del batch  # free this batch before decoding the next
    return True


# ---------------------------------------------------------------------------------------------
# folders of images


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` (hidden files skipped), sorted naturally."""
    files = [
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    ]
    if not files:
        raise RecaptureError(
            f"{folder} contains no images ({', '.join(IMAGE_EXTENSIONS)}); point to a folder of frames or a video file"
        )
    return sorted(files, key=natural_key)


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the image header, without decoding pixels."""
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
                return int(shape[0]), int(shape[1])
        from PIL import Image

        with Image.open(path) as im:
            return im.height, im.width
    except Exception as err:
        raise RecaptureError(
            f"{path} is not a readable image ({err}); remove it from the folder or re-save it"
        ) from err


def check_same_size(files: list[Path]) -> tuple[int, int]:
    """The common ``(H, W)`` of ``files``; error naming two files when sizes differ."""
    first = image_size(files[0])
    for f in files[1:]:
        size = image_size(f)
        if size != first:
            raise RecaptureError(
                f"images in {files[0].parent} have different sizes: {files[0].name} is {first[1]}x{first[0]} "
                f"but {f.name} is {size[1]}x{size[0]} (WxH); resize them to one size first"
            )
    return first


def _to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1|3|4)`` uint8/uint16/float -> ``(H, W, 3)`` uint8 or float32 in [0, 1]."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise RecaptureError(f"{path} has array shape {arr.shape}; expected a grey, RGB or RGBA image")
    arr = np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr[..., :3]
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr.astype(np.float32), 0.0, 1.0)
    raise RecaptureError(f"{path} has pixel type {arr.dtype}; save it as 8- or 16-bit PNG/TIFF")


def load_image(path: Path) -> np.ndarray:
    """One image as ``(H, W, 3)`` uint8 (8-bit files) or float32 in [0, 1] (16-bit, float)."""
    if _is_tiff(path):
        import tifffile

        return _to_rgb(tifffile.imread(path), path)
    from PIL import Image

    with Image.open(path) as im:
        if im.mode.startswith("I;16"):
            return _to_rgb(np.asarray(im).astype(np.uint16), path)
        return _to_rgb(np.asarray(im.convert("RGB")), path)


def decode_images(files: list[Path], sink: Sink) -> None:
    """Load ``files`` one at a time into ``sink`` (each uint8, or float32 in [0, 1] for 16-bit/float)."""
    for k, f in enumerate(files):
        sink(k, load_image(f))
