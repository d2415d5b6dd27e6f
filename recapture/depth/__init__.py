"""Depth for anchor rendering: one :class:`DepthEstimator` protocol, backends chosen by class.

``data.depth`` is a :class:`DepthSource`, selected by ``class_path`` (LightningCLI style); each
backend is one subclass in its own module, whose ``build()`` returns its estimator:

* :class:`TransformersDepthSource`: any ``AutoModelForDepthEstimation`` (Depth Anything V2 by
  default, ZoeDepth, DPT, Depth Pro), relative disparity mapped to depth by a documented
  :class:`DisparityMapping`;
* :class:`FileDepthSource`: precomputed ``.npy`` / ``.npz`` depth, distance or disparity with
  explicit units;
* :class:`PriorDepthSource` (the default): a weight-free ground-plane ramp, labelled as a prior
  (``is_prior=True``);
* :class:`TensorDepth`: depth already in memory (synthetic scenes with exact depth).

All return planar depth ``(T, 1, H, W)``; :func:`scene_scale` (median depth of frame 0) defines one
scene unit; :func:`align_depth_scales` removes per-frame scale/shift flicker.
"""

from recapture.depth.align import align_depth_scales, disparity_to_depth
from recapture.depth.base import (
    DepthEstimator,
    DepthSource,
    DisparityMapping,
    check_depth,
    check_frames,
    scene_scale,
)
from recapture.depth.file_backend import FileDepth, FileDepthSource, distance_to_depth, load_depth_array
from recapture.depth.prior import GroundPlanePrior, PriorDepthSource, ground_plane_depth
from recapture.depth.tensor_backend import TensorDepth
from recapture.depth.transformers_backend import TransformersDepth, TransformersDepthSource, is_metric_model

__all__ = [
    "DepthEstimator",
    "DepthSource",
    "DisparityMapping",
    "FileDepth",
    "FileDepthSource",
    "GroundPlanePrior",
    "PriorDepthSource",
    "TensorDepth",
    "TransformersDepth",
    "TransformersDepthSource",
    "align_depth_scales",
    "check_depth",
    "check_frames",
    "disparity_to_depth",
    "distance_to_depth",
    "ground_plane_depth",
    "is_metric_model",
    "load_depth_array",
    "scene_scale",
]
