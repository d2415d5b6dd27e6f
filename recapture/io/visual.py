"""Previews: captioned side-by-side grids, invalid-region tinting, PNG export."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recapture.utils import RecaptureError, atomic_path

_BACKGROUND = 0.08  # grey level between tiles and behind letterboxed tiles
_STRIP = 0.18  # grey level of caption strips


def _as_video(x: torch.Tensor, i: int) -> torch.Tensor:
    """``(T, C, H, W)`` or ``(C, H, W)`` with C in {1, 3}, float/bool/uint8 -> ``(T, 3, H, W)`` float."""
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise RecaptureError(f"videos[{i}] must be (T, 3|1, H, W) or (3|1, H, W), got {shape}")
    x = x.detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.ndim == 3:
        x = x[None]
    return x.expand(-1, 3, -1, -1).clamp(0.0, 1.0)


def _load_font(size: int) -> Any:
    from PIL import ImageFont

    try:  # Pillow >= 10.1 with FreeType: the bundled default font at any size
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _caption_strip(text: str, width: int, font_size: int) -> torch.Tensor:
    """``(3, h, width)`` grey strip with ``text`` centred in white, elided with '...' if too long."""
    from PIL import Image, ImageDraw

    font = _load_font(font_size)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (font_size, 2)
    margin = max(2, font_size // 3)
    height = ascent + descent + 2 * margin
    image = Image.new("RGB", (width, height), (round(_STRIP * 255),) * 3)
    draw = ImageDraw.Draw(image)
    shown = text
    while shown and draw.textlength(shown, font=font) > width - 2 * margin:
        shown = shown[:-1]
    if shown != text:
        shown = shown[:-3].rstrip() + "..." if len(shown) > 3 else ""
    x = (width - draw.textlength(shown, font=font)) / 2
    draw.text((x, margin), shown, fill=(255, 255, 255), font=font)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0


def _caption_strips(
    captions: Sequence[str | Sequence[str]], num_frames: int, width: int, font_size: int
) -> list[torch.Tensor]:
    """One strip per tile: ``(3, h, width)`` for a fixed caption, ``(T, 3, h, width)`` for per-frame ones.

    Each distinct text is drawn once, so a caption that repeats over frames costs one strip.
    """
    drawn: dict[str, torch.Tensor] = {}

    def strip(text: object) -> torch.Tensor:
        key = str(text)
        if key not in drawn:
            drawn[key] = _caption_strip(key, width, font_size)
        return drawn[key]

    strips = []
    for k, caption in enumerate(captions):
        if isinstance(caption, str) or not isinstance(caption, Sequence):
            strips.append(strip(caption))
            continue
        if len(caption) != num_frames:
            raise RecaptureError(
                f"captions[{k}] has {len(caption)} per-frame captions for {num_frames} frames; "
                "give one string per frame, or a single string for all"
            )
        strips.append(torch.stack([strip(text) for text in caption]))
    return strips


def make_grid(
    videos: Sequence[torch.Tensor],
    captions: Sequence[str | Sequence[str]] | None = None,
    ncols: int | None = None,
    pad: int = 4,
) -> torch.Tensor:
    """Tile videos side by side (row-major) with a caption strip above each tile.

    Every cell is as large as the largest tile; smaller tiles are centred (letterboxed) on a dark
    background. Single images ``(C, H, W)`` or one-frame videos are repeated over time; grey
    ``(T, 1, H, W)`` inputs such as masks are shown as grey. Captions use PIL's bundled default
    font (no system fonts), scaled with the cell width. A tile's caption may change over time
    (e.g. each frame's coverage): give a list of ``T`` strings instead of one string.

    Args:
        videos: each ``(T, 3, H, W)`` / ``(T, 1, H, W)`` float in [0, 1] or uint8, or ``(C, H, W)``;
            all with the same ``T`` (or ``T = 1``).
        captions: one caption per video, each a string (the same on every frame) or a list of
            ``T`` strings (one per frame); ``None`` for no strips.
        ncols: tiles per row (default: all in one row).
        pad: pixels between cells and around the grid.

    Returns:
        ``(T, 3, H', W')`` float in [0, 1].
    """
    if len(videos) == 0:
        raise RecaptureError("make_grid got no videos; pass at least one (T, 3, H, W) tensor")
    tiles = [_as_video(v, i) for i, v in enumerate(videos)]
    if captions is not None and len(captions) != len(tiles):
        raise RecaptureError(
            f"got {len(captions)} captions for {len(tiles)} videos; pass one caption per video"
        )
    lengths = {t.shape[0] for t in tiles} - {1}
    if len(lengths) > 1:
        raise RecaptureError(f"videos have different frame counts {sorted(lengths)}; trim them to one length")
    num_frames = lengths.pop() if lengths else 1
    ncols = len(tiles) if ncols is None else ncols
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise RecaptureError(f"ncols={ncols!r} must be a positive integer")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise RecaptureError(f"pad={pad!r} must be a non-negative integer")
    ncols = min(ncols, len(tiles))
    nrows = math.ceil(len(tiles) / ncols)
    cell_h = max(t.shape[-2] for t in tiles)
    cell_w = max(t.shape[-1] for t in tiles)
    strips = None
    if captions is not None:
        font_size = int(min(28, max(10, cell_w // 28)))
        strips = _caption_strips(captions, num_frames, cell_w, font_size)
    strip_h = strips[0].shape[-2] if strips else 0

    out_h = nrows * (strip_h + cell_h) + (nrows + 1) * pad
    out_w = ncols * cell_w + (ncols + 1) * pad
    grid = torch.full((num_frames, 3, out_h, out_w), _BACKGROUND)
    for k, tile in enumerate(tiles):
        row, col = divmod(k, ncols)
        y0 = pad + row * (strip_h + cell_h + pad)
        x0 = pad + col * (cell_w + pad)
        if strips:
            grid[:, :, y0 : y0 + strip_h, x0 : x0 + cell_w] = strips[k]
        h, w = tile.shape[-2:]
        ty, tx = y0 + strip_h + (cell_h - h) // 2, x0 + (cell_w - w) // 2
        grid[:, :, ty : ty + h, tx : tx + w] = tile
    return grid


def overlay_mask(
    frames: torch.Tensor,
    mask: torch.Tensor,
    color: tuple[float, float, float] = (1.0, 0.2, 0.2),
    alpha: float = 0.5,
) -> torch.Tensor:
    """Tint the invalid region (``mask == 0``) of frames; valid pixels (``mask == 1``) are unchanged.

    A soft mask in [0, 1] blends linearly: ``out = m * frames + (1 - m) * tinted``.

    Args:
        frames: ``(..., 3, H, W)`` float in [0, 1].
        mask: ``(..., 1, H, W)`` validity, bool or {0, 1}, with the same leading axes as
            ``frames`` or none (one mask for every frame).
        color: RGB tint in [0, 1].
        alpha: tint strength in [0, 1].

    Returns:
        ``(..., 3, H, W)`` float.
    """
    if frames.ndim < 3 or frames.shape[-3] != 3:
        raise RecaptureError(f"frames must be (..., 3, H, W), got {tuple(frames.shape)}")
    if mask.ndim < 3 or mask.shape[-3] != 1 or mask.shape[-2:] != frames.shape[-2:]:
        raise RecaptureError(
            f"mask must be (..., 1, H, W) matching frames {tuple(frames.shape)}, got {tuple(mask.shape)}; "
            "add the channel axis with .unsqueeze(-3)"
        )
    if mask.ndim != 3 and mask.shape[:-3] != frames.shape[:-3]:
        raise RecaptureError(
            f"mask leading axes {tuple(mask.shape[:-3])} do not match frames {tuple(frames.shape[:-3])}; "
            "pass one mask per frame or a single (1, H, W) mask"
        )
    if not 0.0 <= alpha <= 1.0:
        raise RecaptureError(f"alpha={alpha!r} must be in [0, 1]")
    m = mask.to(frames.device, frames.dtype if frames.is_floating_point() else torch.float32)
    tint = torch.tensor(color, dtype=m.dtype, device=frames.device).view(3, 1, 1)
    tinted = (1.0 - alpha) * frames + alpha * tint
    return torch.where(m >= 1.0, frames.to(m.dtype), m * frames + (1.0 - m) * tinted)


def save_image(path: str | os.PathLike, image: torch.Tensor) -> Path:
    """Save one image as PNG (or JPEG/BMP/TIFF by extension), atomically.

    Args:
        path: output file; ``.png`` recommended.
        image: ``(3, H, W)`` or ``(1, H, W)`` float in [0, 1] (clipped) or uint8.

    Returns:
        ``path``.
    """
    from PIL import Image

    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise RecaptureError(
            f"image must be (3, H, W) or (1, H, W), got {shape}; take one frame with video[t]"
        )
    path = Path(path)
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
    if path.suffix.lower() not in formats:
        raise RecaptureError(
            f"cannot save {path}: extension {path.suffix!r} is not one of {', '.join(formats)}"
        )
    x = image.detach().cpu()
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    array = x.expand(3, -1, -1).permute(1, 2, 0).contiguous().numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=formats[path.suffix.lower()])
    return path
