"""Settings of :func:`~recapture.anchor.render_anchor`, one small frozen dataclass per concern.

:class:`~recapture.anchor.AnchorConfig` (the ``data.anchor`` config section) keeps its flat keys
and hands these to the renderer (``AnchorConfig.splat_settings()`` and friends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["FusionSettings", "MaskSettings", "SplatSettings"]


@dataclass(frozen=True)
class SplatSettings:
    """How the moved points become pixels.

    Attributes:
        mode: ``"hard"`` deterministic z-buffer (nearest surface wins) or ``"soft"`` differentiable
            softmax splat (gradients reach frames, depth and ``c2w``).
        footprint: hard mode: odd splat size in pixels; 1 is exact, 3 closes slant pinholes
            and shrinks holes by a pixel (pixels that received a point keep it).
        soft_beta: soft mode depth sharpness (see :func:`~recapture.anchor.splat.splat_soft`).
    """

    mode: Literal["hard", "soft"] = "hard"
    footprint: int = 1
    soft_beta: float = 50.0


@dataclass(frozen=True)
class MaskSettings:
    """Refinement of the validity mask after splatting.

    Attributes:
        erode: shrink the valid region by this many pixels (drop unreliable hole rims).
        dilate: grow the valid region by this many pixels, filling with neighbouring colours
            (applied before erosion; equal values give a closing that removes pinholes).
    """

    erode: int = 0
    dilate: int = 0


@dataclass(frozen=True)
class FusionSettings:
    """Neighbour fusion, beyond the paper (off by default).

    Attributes:
        neighbors: also splat points of the ``n`` frames on each side that frame t's depth says
            are hidden static background (see :func:`~recapture.anchor.points.neighbor_points`),
            filling disocclusions with real pixels; 0 is off.
    """

    neighbors: int = 0
