"""A weight-free depth prior: a floor rising from the bottom of the frame to a vertical backdrop."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from recapture.depth.base import DepthSource, check_frames
from recapture.utils import RecaptureError

log = logging.getLogger(__name__)

__all__ = ["GroundPlanePrior", "PriorDepthSource", "ground_plane_depth"]


def ground_plane_depth(
    height: int, width: int, horizon: float = 0.4, near: float = 1.0, far: float = 3.0
) -> Tensor:
    """Planar depth of a level camera above a flat floor that ends at a vertical backdrop.

    For a camera at height ``h`` looking level, the floor seen in row ``v`` below the horizon row
    ``v_h`` lies at ``z = h f / (v - v_h)``. Choosing ``h f`` so the bottom row is at ``near``
    removes the focal length: ``z = near (H - 1 - v_h) / (v - v_h)``. The floor is capped at
    ``far``: a fronto-parallel backdrop behind the subject (everything above the row where the
    floor reaches ``far``). Far at the top, near at the bottom: a plausible guess for a typical
    handheld video. The backdrop matters: with a floor all the way to the horizon, upright
    subjects would be laid flat on the ground and shear badly under an orbit; on the backdrop they
    move rigidly, like a billboard.

    Args:
        height: image height H.
        width: image width W.
        horizon: horizon row as a fraction of the height from the top, in [0, 1).
        near: depth of the bottom row.
        far: depth of the backdrop (cap), > near.

    Returns:
        planar depth ``(1, H, W)``, in ``[near, far]``.
    """
    if not 0 <= horizon < 1:
        raise RecaptureError(f"the prior's horizon must be in [0, 1), got {horizon}")
    if not 0 < near < far:
        raise RecaptureError(f"ground-plane prior needs 0 < near < far, got near={near}, far={far}")
    v_h = horizon * (height - 1)
    rows = torch.arange(height, dtype=torch.float32)
    below = rows - v_h
    span = max(height - 1 - v_h, 1e-6)
    z = torch.where(below > 0, near * span / below.clamp_min(1e-6), torch.full_like(rows, far))
    return z.clamp(near, far)[None, :, None].expand(1, height, width).contiguous()


class GroundPlanePrior:
    """The fallback when no depth weights are available; labelled as a prior everywhere.

    Args:
        horizon: horizon row as a fraction of the height from the top.
        near: depth of the bottom row.
        far: depth of the backdrop (relative to ``near``).
    """

    is_prior = True

    def __init__(self, horizon: float = 0.4, near: float = 1.0, far: float = 3.0) -> None:
        self.horizon, self.near, self.far = horizon, near, far
        ground_plane_depth(2, 2, horizon, near, far)  # validate now, not at the first call
        self.name = "prior:ground-plane"

    @property
    def cache_token(self) -> object:
        return {"name": self.name, "horizon": self.horizon, "near": self.near, "far": self.far}

    def __call__(self, frames: Tensor) -> Tensor:
        """Return the prior for every frame.

        Args:
            frames: ``(T, 3, H, W)``; only its shape, device and dtype are used.

        Returns:
            planar depth ``(T, 1, H, W)``.
        """
        check_frames(frames)
        log.warning(
            "depth: using the weight-free floor-and-backdrop PRIOR, not estimated depth (parallax is "
            "approximate; use --data.depth TransformersDepthSource with local weights for real depth)"
        )
        t, _, h, w = frames.shape
        z = ground_plane_depth(h, w, self.horizon, self.near, self.far)
        dtype = frames.dtype if frames.is_floating_point() else torch.float32
        return z.to(frames.device, dtype)[None].expand(t, 1, h, w).contiguous()


@dataclass
class PriorDepthSource(DepthSource):
    """The weight-free floor-and-backdrop prior (the default ``data.depth``): no real depth.

    Reports label its depth as a prior (``depth_is_prior``). Selected with ``--data.depth
    PriorDepthSource`` (or ``class_path: PriorDepthSource`` under ``depth:``).

    Attributes:
        horizon: the horizon row as a fraction of the height from the top.
        backdrop: depth of the vertical backdrop that caps the ground plane, in units of the bottom
            row's depth (3: the floor meets a backdrop three times farther away than the bottom of
            the frame, at 60% of the height for the default horizon).
    """

    horizon: float = 0.4
    backdrop: float = 3.0

    def build(self, fov_deg: float | None = None, device: torch.device | str | None = None) -> GroundPlanePrior:
        """The :class:`GroundPlanePrior` (``fov_deg`` and ``device`` are not used)."""
        return GroundPlanePrior(horizon=self.horizon, near=1.0, far=self.backdrop)
