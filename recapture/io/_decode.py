"""Decoders behind :func:`recapture.io.read_video`: decord, PyAV and folders of images.

Every decoder returns ``(T, H, W, 3)`` uint8 or float32 numpy frames for a given list of frame
indices; :mod:`recapture.io.video` picks one, validates it and falls back to PyAV.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from recapture.utils import RecaptureError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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


def decode_pyav(path: Path, indices: list[int]) -> tuple[np.ndarray, int | None]:
    """Decode the frames at sorted ``indices`` sequentially, stopping after the last one.

    Returns:
        ``((T, H, W, 3) uint8, None)`` when every index was found, else ``(partial, frames_seen)``
        so the caller can report how many frames the file really has.
    """
    import av

    wanted = set(indices)
    last = indices[-1]
    frames: list[np.ndarray] = []
    container = _open_container(path)
    seen = 0
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            seen = i + 1
            if i in wanted:  # display rotation applied like decord does (counter-clockwise)
                frames.append(_apply_rotation(frame.to_ndarray(format="rgb24"), _rotation(frame)))
            if i >= last:
                break
    except av.error.FFmpegError as err:
        if not frames:
            raise RecaptureError(
                f"{path} could not be decoded ({err}); re-encode it (e.g. to H.264 mp4)"
            ) from err
        logger.warning("decoding %s stopped at frame %d: %s", path, seen, err)
    finally:
        container.close()
    stacked = np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
    return stacked, (None if len(frames) == len(indices) else seen)


def decode_decord(path: Path, indices: list[int], height: int, width: int) -> np.ndarray | None:
    """Decode ``indices`` with decord; ``None`` (after logging why) if decord fails or misbehaves.

    decord mis-decodes some widths (16, 48, ...) and can return 4 or 6 channels, so the output
    shape is checked against the container's ``(len(indices), height, width, 3)`` (display size:
    decord applies the rotation of phone videos).
    """
    try:
        import decord
    except ImportError:
        return None
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        if indices[-1] >= len(reader):
            logger.info("decord sees %d frames in %s, fewer than needed: using PyAV", len(reader), path)
            return None
        batch = reader.get_batch(indices).asnumpy()
    except Exception as err:  # decord raises its own DECORDError and plain RuntimeErrors
        logger.info("decord failed on %s (%s): using PyAV", path, err)
        return None
    expected = (len(indices), height, width, 3)
    if tuple(batch.shape) != expected or batch.dtype != np.uint8:
        logger.info(
            "decord returned %s %s for %s, expected %s uint8: using PyAV",
            batch.shape,
            batch.dtype,
            path,
            expected,
        )
        return None
    return batch


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


def decode_images(files: list[Path]) -> np.ndarray:
    """Stack images as ``(T, H, W, 3)`` (uint8 unless any file is 16-bit/float)."""
    arrays = [load_image(f) for f in files]
    if any(a.dtype != np.uint8 for a in arrays):
        arrays = [a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a for a in arrays]
    return np.stack(arrays)
