"""What a user looks at after stage 1: anchor, mask, side-by-side preview, trajectory and report files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from recapture.utils import write_json

if TYPE_CHECKING:
    from recapture.anchor.pipeline import AnchorResult

log = logging.getLogger("recapture.anchor.pipeline")  # the name the logs have always shown

__all__ = ["write_anchor_outputs"]

PREVIEW_TILE_WIDTH = 512


def _preview_tiles(result: AnchorResult) -> list[Tensor]:
    from recapture.io import overlay_mask

    tiles = [
        result.source.float(),
        result.anchor.frames.float(),
        overlay_mask(result.anchor.frames.float(), result.anchor.mask),
    ]
    w = tiles[0].shape[-1]
    if w > PREVIEW_TILE_WIDTH:  # keep the 3-wide preview a sensible size
        size = (round(tiles[0].shape[-2] * PREVIEW_TILE_WIDTH / w / 2) * 2, PREVIEW_TILE_WIDTH)
        tiles = [
            F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False) for x in tiles
        ]
    return [x.clamp(0, 1) for x in tiles]


def write_anchor_outputs(result: AnchorResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``anchor.mp4``, ``mask.mp4``, ``preview.mp4``, ``trajectory.json`` and ``report.json``.

    Every file is written atomically; the videos at :func:`~recapture.io.watchable_fps` (the source's
    rate, slowed so that the clip lasts at least 1.5 s; ``report.json`` says which). The preview shows source | anchor | mask overlay (invalid
    pixels tinted) side by side with captions; the overlay's ``valid N%`` caption is each frame's
    own coverage.

    Args:
        result: what :func:`~recapture.anchor.build_anchor` returned.
        out_dir: output folder (created).

    Returns:
        ``{"anchor": path, "mask": path, "preview": path, "trajectory": path, "report": path}``.
    """
    from recapture.cameras import save_trajectory
    from recapture.io import make_grid, watchable_fps, write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fps = watchable_fps(result.fps, result.anchor.frames.shape[0])  # a short clip is slowed to be seen
    files = {
        "anchor": write_video(out / "anchor.mp4", result.anchor.frames.clamp(0, 1), fps),
        "mask": write_video(out / "mask.mp4", result.anchor.mask, fps),
    }
    per_frame = [f"valid {c:.0%} (red: to generate)" for c in result.report["coverage"]]
    captions: list[str | list[str]] = ["source", "anchor", per_frame]
    if result.report.get("depth_is_prior"):
        captions[1] = "anchor (depth prior)"
    files["preview"] = write_video(
        out / "preview.mp4", make_grid(_preview_tiles(result), captions=captions), fps
    )
    files["trajectory"] = save_trajectory(result.trajectory, out / "trajectory.json")
    files["report"] = write_json(out / "report.json", {**result.report, "video_fps": fps})
    log.info("anchor outputs written to %s (videos at %.3g fps; source %.3g fps)", out, fps, result.fps)
    return {k: Path(v) for k, v in files.items()}
