"""Procedural ray-cast scenes: one scene model, one ray caster, an endless seeded video dataset.

* :mod:`~recapture.data.procedural.scene` / :mod:`~recapture.data.procedural.textures`: the scene
  model (textured planes, sky dome, moving spheres and boxes, a directional light) shared by the
  example clip (:mod:`recapture.data.example`), the Kubric-like scenes
  (:mod:`recapture.data.kubric.raycast`) and the procedural training data.
* :func:`render`: the one ray caster (vectorised torch; exact planar depth; optional supersampled
  colour; any list of cameras at any frames, so novel views of the same scene are exact).
* :func:`sample_scene`, :func:`sample_camera_path`, :func:`relative_path`: variety from a seed
  (textures, walls or open sky, 1-5 rolling / sliding / bouncing / turning primitives, light and
  shadows; static, preset or random smooth camera moves).
* :func:`clip_seed`, :func:`make_clip`, :class:`ProceduralVideoDataset` (map-style, evaluation),
  :class:`ProceduralVideoStream` (endless, training): seeded clips whose train and eval seeds never
  collide.
"""

from recapture.data.procedural.dataset import (
    SPLITS,
    ProceduralClip,
    ProceduralVideoDataset,
    ProceduralVideoStream,
    clip_seed,
    make_clip,
    render_path,
)
from recapture.data.procedural.generator import DOME_RADIUS, sample_scene
from recapture.data.procedural.paths import (
    CAMERA_MOTIONS,
    PRESET_RANGES,
    CameraPath,
    path_is_clear,
    relative_path,
    sample_camera_path,
)
from recapture.data.procedural.raycast import Hits, camera_rays, intersect, render, shade
from recapture.data.procedural.scene import Dome, Light, Plane, Primitive, Scene, axis_rotation
from recapture.data.procedural.textures import (
    Bricks,
    Checker,
    Gradient,
    Noise,
    Plain,
    Sky,
    Stripes,
    Texture,
    Tiles,
    Tinted,
)

__all__ = [
    "CAMERA_MOTIONS",
    "DOME_RADIUS",
    "PRESET_RANGES",
    "SPLITS",
    "Bricks",
    "CameraPath",
    "Checker",
    "Dome",
    "Gradient",
    "Hits",
    "Light",
    "Noise",
    "Plain",
    "Plane",
    "Primitive",
    "ProceduralClip",
    "ProceduralVideoDataset",
    "ProceduralVideoStream",
    "Scene",
    "Sky",
    "Stripes",
    "Texture",
    "Tiles",
    "Tinted",
    "axis_rotation",
    "camera_rays",
    "clip_seed",
    "intersect",
    "make_clip",
    "path_is_clear",
    "relative_path",
    "render",
    "render_path",
    "sample_camera_path",
    "sample_scene",
    "shade",
]
