"""Kubric-4D (GCD's release): reader, GCD evaluation protocol and synthetic scenes in the same layout.

* :func:`load_scene` reads a scene (per-view metadata, RGBA PNG, float32 TIFF Euclidean depth,
  palette segmentation) into recapture's conventions (OpenCV c2w, pixel K, planar depth).
* :func:`make_eval_sample` builds one GCD evaluation pair: input and ground-truth videos re-rendered
  from the merged 16-view point cloud, occlusion masks from view 4, cameras and controls
  (official controls JSON via :func:`read_controls`, else a labelled seeded fallback sampler).
* :func:`write_synthetic_scene` / :func:`write_kubric_mini` ray-cast procedural scenes from the 16
  dataset cameras and write them in exactly the dataset layout (exact ground truth for tests and a
  small benchmark).

Conventions and the protocol are in ``specs/benchmarks.md`` section 1.
"""

from recapture.data.kubric.controls import (
    ControlsFile,
    SceneControls,
    controls_for_scene,
    parse_controls,
    read_controls,
    sample_fallback_controls,
    spherical_trajectories,
)
from recapture.data.kubric.geometry import (
    INPUT_VIEW,
    NUM_VIEWS,
    distance_to_planar,
    kubric_intrinsics,
    kubric_to_opencv_c2w,
    opencv_c2w_to_kubric,
    planar_to_distance,
    spherical_pose,
    view_spherical,
)
from recapture.data.kubric.protocol import RESOLUTIONS, EvalSample, ProtocolSettings, make_eval_sample
from recapture.data.kubric.reader import KubricScene, load_scene, scene_name
from recapture.data.kubric.splat import blur_into_black, gaussian_blur, gcd_soft_splat
from recapture.data.kubric.synthetic import write_kubric_mini, write_synthetic_scene

__all__ = [
    "INPUT_VIEW",
    "NUM_VIEWS",
    "RESOLUTIONS",
    "ControlsFile",
    "EvalSample",
    "KubricScene",
    "ProtocolSettings",
    "SceneControls",
    "blur_into_black",
    "controls_for_scene",
    "distance_to_planar",
    "gaussian_blur",
    "gcd_soft_splat",
    "kubric_intrinsics",
    "kubric_to_opencv_c2w",
    "load_scene",
    "make_eval_sample",
    "opencv_c2w_to_kubric",
    "parse_controls",
    "planar_to_distance",
    "read_controls",
    "sample_fallback_controls",
    "scene_name",
    "spherical_pose",
    "spherical_trajectories",
    "view_spherical",
    "write_kubric_mini",
    "write_synthetic_scene",
]
