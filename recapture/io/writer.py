"""H.264 video writing through PyAV (atomic, fractional frame rates kept)."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recapture.utils import RecaptureError, atomic_path, check_video

_CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


MIN_PREVIEW_SECONDS = 1.5


def watchable_fps(fps: float, num_frames: int, min_seconds: float = MIN_PREVIEW_SECONDS) -> float:
    """The frame rate output videos are written at: the source's, slowed so the clip lasts ``min_seconds``.

    A 14-frame clip of a 30 fps video would flash by in half a second; it is written at 9.3 fps
    instead (1.5 s). Clips that already last long enough keep their rate. Reports record the rate used.
    """
    if fps <= 0 or num_frames < 1:
        raise RecaptureError(f"watchable_fps: fps={fps} and num_frames={num_frames} must be positive")
    return round(min(float(fps), max(1.0, num_frames / min_seconds)), 3)


def fps_to_fraction(fps: float) -> Fraction:
    """Exact rational frame rate: 29.97 -> 2997/100, 30000/1001 (29.97003) -> 30000/1001."""
    if not (isinstance(fps, (int, float, Fraction)) and math.isfinite(fps) and fps > 0):
        raise RecaptureError(f"fps={fps!r} must be a positive number")
    return Fraction(fps).limit_denominator(1001)


def to_uint8_frames(frames: torch.Tensor) -> torch.Tensor:
    """Validate frames and convert them to ``(T, H, W, 3)`` uint8 on the CPU.

    Args:
        frames: ``(T, 3, H, W)`` or ``(T, 1, H, W)`` (grey, e.g. a mask); float in [0, 1] (values
            outside are clipped), bool, or uint8.

    Returns:
        ``(T, H, W, 3)`` uint8.
    """
    check_video(
        frames, "frames", channels=(3, 1),
        fix="a video has 3 channels, a grey mask 1: add the channel axis with .unsqueeze(1) for (T, H, W) masks",
    )
    if frames.shape[0] == 0:
        raise RecaptureError("frames has 0 frames; pass at least one frame")
    frames = frames.detach().cpu()
    if frames.dtype == torch.bool:
        frames = frames.to(torch.uint8) * 255
    elif frames.dtype != torch.uint8:
        if not frames.is_floating_point():
            raise RecaptureError(f"frames have dtype {frames.dtype}; pass float in [0, 1] or uint8")
        if torch.isnan(frames).any():
            raise RecaptureError("frames contain NaN values; check the model output before writing")
        frames = (frames.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return frames.expand(-1, 3, -1, -1).permute(0, 2, 3, 1)


def frames_digest(frames: torch.Tensor) -> str:
    """sha256 of a video exactly as :func:`write_video` quantises it (uint8 ``(T, H, W, 3)``).

    H.264 files of the same frames are not always byte-identical (x264 can decide differently under
    CPU load), so reproducibility is stated on the frames: ``report.json`` of ``fit`` and
    ``generate`` records this digest for every video they write.
    """
    import hashlib

    images = to_uint8_frames(frames).contiguous()
    digest = hashlib.sha256(f"{tuple(images.shape)}".encode())
    digest.update(images.numpy().tobytes())
    return digest.hexdigest()


def _pad_even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _frame_to_av(image: np.ndarray) -> Any:
    """``(H, W, 3)`` uint8 -> ``av.VideoFrame`` (a seam for tests that simulate encoder failures)."""
    import av

    return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: float, crf: int = 18) -> Path:
    """Write frames as an H.264 (libx264, yuv420p) video, atomically.

    The frame rate is stored as an exact fraction, so 29.97 or 30000/1001 survive a round trip.
    yuv420p needs even sides: an odd height or width is padded by one replicated row/column at
    the bottom/right. Nothing appears at ``path`` unless the whole video was written.

    Args:
        path: ``.mp4``, ``.mov`` or ``.mkv`` file to write (parents are created).
        frames: ``(T, 3, H, W)`` float in [0, 1] or uint8, or ``(T, 1, H, W)`` written as grey.
        fps: frames per second.
        crf: x264 constant rate factor (0 = lossless luma, 18 = visually lossless, 23 = default).

    Returns:
        ``path``.
    """
    import av

    path = Path(path)
    container_format = _CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise RecaptureError(
            f"cannot write {path}: extension {path.suffix!r} is not one of {', '.join(_CONTAINERS)}"
        )
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise RecaptureError(f"crf={crf!r} must be an integer in [0, 51] (lower is better quality)")
    rate = fps_to_fraction(fps)
    images = to_uint8_frames(frames)
    height, width = images.shape[1] + images.shape[1] % 2, images.shape[2] + images.shape[2] % 2

    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        # x264's adaptive quantisation made files of the same frames differ often; without it they
        # almost always match (see frames_digest for the exact check), and PSNR is a bit higher
        stream.options = {"crf": str(crf), "x264-params": "aq-mode=0"}
        for i in range(images.shape[0]):
            # converted here: the encoder's implicit RGB -> yuv420p conversion varied from run to run too
            frame = _frame_to_av(_pad_even(images[i].numpy())).reformat(format="yuv420p")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
