"""Depth for anchor rendering: one :class:`DepthEstimator` protocol, three backends.

* ``transformers``: any ``AutoModelForDepthEstimation`` (Depth Anything V2 by default, ZoeDepth,
  DPT, Depth Pro), relative disparity mapped to depth by a documented :class:`DisparityMapping`;
* ``file``: precomputed ``.npy`` / ``.npz`` depth, distance or disparity with explicit units;
* ``prior``: a weight-free ground-plane ramp, labelled as a prior (``is_prior=True``);
* :class:`TensorDepth`: depth already in memory (synthetic scenes with exact depth).

All return planar depth ``(T, 1, H, W)``; :func:`scene_scale` (median depth of frame 0) defines one
scene unit; :func:`align_depth_scales` removes per-frame scale/shift flicker.
"""

from recapture.depth.align import align_depth_scales, disparity_to_depth
from recapture.depth.base import (
    DepthConfig,
    DepthEstimator,
    DisparityMapping,
    check_depth,
    check_frames,
    make_depth_estimator,
    scene_scale,
)
from recapture.depth.file_backend import FileDepth, distance_to_depth, load_depth_array
from recapture.depth.prior import GroundPlanePrior, ground_plane_depth
from recapture.depth.tensor_backend import TensorDepth
from recapture.depth.transformers_backend import TransformersDepth, is_metric_model

__all__ = [
    "DepthConfig",
    "DepthEstimator",
    "DisparityMapping",
    "FileDepth",
    "GroundPlanePrior",
    "TensorDepth",
    "TransformersDepth",
    "align_depth_scales",
    "check_depth",
    "check_frames",
    "disparity_to_depth",
    "distance_to_depth",
    "ground_plane_depth",
    "is_metric_model",
    "load_depth_array",
    "make_depth_estimator",
    "scene_scale",
]
