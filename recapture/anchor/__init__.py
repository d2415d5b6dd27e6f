"""Anchor videos (paper section 3.2): point clouds from depth, re-rendered along a new trajectory.

* :func:`render_anchor` - tensors in, :class:`AnchorVideo` (frames + validity mask) out; hard
  z-buffer or differentiable soft splatting on kornia geometry, set by :class:`SplatSettings`,
  :class:`MaskSettings` and :class:`FusionSettings`;
* :func:`build_anchor` / :func:`write_anchor_outputs` - the cached stage-1 pipeline behind
  ``recapture anchor`` and the data module.
"""

from recapture.anchor.mask import refine_mask
from recapture.anchor.pipeline import (
    AnchorConfig,
    AnchorResult,
    build_anchor,
    preflight_message,
    write_anchor_outputs,
)
from recapture.anchor.points import depth_to_points, invert_rigid, neighbor_points
from recapture.anchor.render import AnchorVideo, render_anchor
from recapture.anchor.settings import FusionSettings, MaskSettings, SplatSettings
from recapture.anchor.splat import splat_hard, splat_soft

__all__ = [
    "AnchorConfig",
    "AnchorResult",
    "AnchorVideo",
    "FusionSettings",
    "MaskSettings",
    "SplatSettings",
    "build_anchor",
    "depth_to_points",
    "invert_rigid",
    "neighbor_points",
    "preflight_message",
    "refine_mask",
    "render_anchor",
    "splat_hard",
    "splat_soft",
    "write_anchor_outputs",
]
