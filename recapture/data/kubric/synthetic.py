"""Write procedural scenes in exactly GCD's Kubric-4D layout (benchmarks spec 1.9), and ``kubric-mini``.

Each scene is ray-cast (:mod:`recapture.data.kubric.raycast`, on the project's one ray caster in
:mod:`recapture.data.procedural`) from the 16 dataset cameras (spec 1.4:
radius 15 around (0, 0, 1)) and written like the real dataset: per-view metadata JSON (scene
resolution / frame rate / frame count, camera positions, Blender ``(w, x, y, z)`` quaternions,
normalised Blender-signed ``K``, instances), RGBA PNGs, float32 TIFF **Euclidean** depth and palette
PNG segmentation. Ground truth (geometry, depth, ids) is exact, so the reader, the GCD protocol and
the metrics can be tested end to end, and a few scenes make a small benchmark where depth is known.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recapture.cameras import look_at
from recapture.cameras.poses import matrix_to_quaternion
from recapture.data.kubric.geometry import (
    DATASET_FPS,
    DATASET_NUM_FRAMES,
    DATASET_RESOLUTION,
    FOCAL_LENGTH_MM,
    LOOK_AT,
    NUM_VIEWS,
    SENSOR_WIDTH_MM,
    kubric_intrinsics,
    normalised_kubric_K,
    opencv_c2w_to_kubric,
    view_spherical,
)
from recapture.data.kubric.raycast import SyntheticScene, make_scene, render_view
from recapture.data.kubric.reader import frame_path, scene_name, view_metadata_path
from recapture.utils import RecaptureError, atomic_path

__all__ = ["segmentation_palette", "synthetic_view_camera", "write_kubric_mini", "write_synthetic_scene"]


def segmentation_palette(num_ids: int = 256) -> list[int]:
    """A flat 768-entry RGB palette: id 0 black, ids >= 1 evenly spaced hues (like Kubric's HLS palette)."""
    import colorsys

    palette = [0, 0, 0]
    for i in range(1, 256):
        r, g, b = colorsys.hls_to_rgb(((i - 1) / max(num_ids - 1, 1)) % 1.0, 0.5, 0.8)
        palette += [round(r * 255), round(g * 255), round(b * 255)]
    return palette


def synthetic_view_camera(view: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera of dataset view ``view`` for ``size`` ``(H, W)``: OpenCV c2w ``(4, 4)`` and pixel ``K`` ``(3, 3)``.

    Both float64 (the generator's exact ground truth); the pose is :func:`spherical_pose` of
    :func:`view_spherical` computed in double precision.
    """
    az, el, r = view_spherical(view)
    a, e = math.radians(az), math.radians(el)
    target = torch.tensor(LOOK_AT, dtype=torch.float64)
    eye = target + r * torch.tensor(
        [math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)], dtype=torch.float64
    )
    c2w = look_at(eye, target, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    return c2w, kubric_intrinsics(normalised_kubric_K(*size), *size)


def _view_metadata(
    scene: SyntheticScene, view: int, size: tuple[int, int], c2w: torch.Tensor
) -> dict[str, Any]:
    height, width = size
    T = scene.num_frames
    position, quaternion = opencv_c2w_to_kubric(c2w)
    blender = c2w.clone()
    blender[:3, 1:3] *= -1
    instances = []
    for obj in scene.objects:
        instances.append(
            {
                "asset_id": "cube" if obj.kind == "box" else "sphere",
                "segmentation_id": obj.instance_id,
                "size": obj.size.tolist(),
                "positions": obj.centres.tolist(),
                "quaternions": matrix_to_quaternion(obj.rotations).tolist(),
                "colours": obj.colours.tolist(),
            }
        )
    az, el, r = view_spherical(view)
    return {
        "scene": {
            "resolution": [width, height],
            "frame_rate": DATASET_FPS,
            "step_rate": 240,
            "gravity": [0.0, 0.0, -10.0],
            "num_frames": T,
            "seed": scene.seed,
        },
        "camera": {
            "focal_length": FOCAL_LENGTH_MM,
            "sensor_width": SENSOR_WIDTH_MM,
            "field_of_view": 2.0 * math.atan(SENSOR_WIDTH_MM / (2.0 * FOCAL_LENGTH_MM)),
            "positions": [position.tolist()] * T,
            "quaternions": [quaternion.tolist()] * T,
            "K": normalised_kubric_K(height, width).tolist(),
            "R": blender.tolist(),
        },
        "instances": instances,
        "synthetic": {
            "generator": "recapture.data.kubric.synthetic",
            "seed": scene.seed,
            "view_spherical": [az, el, r],
            "dome_radius": scene.dome_radius,
        },
    }


def _write_view(
    scene: SyntheticScene, scene_dir: Path, view: int, size: tuple[int, int], supersample: int, preview: bool
) -> None:
    import tifffile
    from PIL import Image

    c2w, K = synthetic_view_camera(view, size)
    palette = segmentation_palette(len(scene.objects) + 1)
    out = render_view(scene, list(range(scene.num_frames)), c2w, K, size, supersample)
    rgb8 = (out["rgb"].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    (scene_dir / f"frames_p0_v{view}").mkdir(parents=True, exist_ok=True)
    for t in range(scene.num_frames):
        rgba = np.concatenate([rgb8[t], np.full(rgb8.shape[1:3] + (1,), 255, np.uint8)], axis=-1)
        Image.fromarray(rgba).save(frame_path(scene_dir, view, "rgba", t))
        tifffile.imwrite(
            frame_path(scene_dir, view, "depth", t), out["distance"][t].numpy().astype(np.float32)
        )
        seg = Image.frombytes(
            "P", (size[1], size[0]), out["segmentation"][t].numpy().astype(np.uint8).tobytes()
        )
        seg.putpalette(palette)
        seg.save(frame_path(scene_dir, view, "segmentation", t))
    if preview:  # <scn>_p0_v{V}_rgb.mp4, like the dataset's preview videos
        from recapture.io import write_video

        write_video(scene_dir / f"{scene_dir.name}_p0_v{view}_rgb.mp4", out["rgb"], fps=DATASET_FPS)
    meta = _view_metadata(scene, view, size, c2w)
    view_metadata_path(scene_dir, view).write_text(json.dumps(meta, indent=2) + "\n")


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 8 for s in size)
    ):
        raise RecaptureError(
            f"size={size!r} must be (H, W) integers >= 8, e.g. (384, 576) or (64, 96) for tests"
        )
    return int(size[0]), int(size[1])


def write_synthetic_scene(
    root: str | os.PathLike,
    scene_id: str | int,
    num_frames: int = DATASET_NUM_FRAMES,
    size: tuple[int, int] = DATASET_RESOLUTION,
    seed: int = 0,
    supersample: int = 2,
    overwrite: bool = False,
    previews: bool = False,
) -> Path:
    """Ray-cast a procedural scene from the 16 Kubric-4D cameras and write it in the dataset layout.

    The scene folder appears atomically (written to a temporary folder, then renamed), so an
    interrupted call never leaves a scene that looks complete.

    Args:
        root: dataset root; the scene goes to ``<root>/scnXXXXX``.
        scene_id: ``"scn02900"`` or ``2900``.
        num_frames: frames per view (dataset: 60; the GCD protocol needs >= 14).
        size: ``(H, W)`` of the frames (dataset: ``(384, 576)``, i.e. 576x384; tests: e.g. ``(64, 96)``).
        seed: scene randomness (objects, colours, paths).
        supersample: colour sub-pixel rays per side.
        overwrite: replace an existing scene folder; otherwise an existing one is an error.
        previews: also write the ``<scn>_p0_v{V}_rgb.mp4`` preview videos (needs PyAV).

    Returns:
        The scene folder.
    """
    height, width = _check_size(size)
    name = scene_name(scene_id)
    scene_dir = Path(root) / name
    if scene_dir.exists() and not overwrite:
        raise RecaptureError(
            f"{scene_dir} already exists; pass overwrite=True to replace it or pick another scene_id"
        )
    scene = make_scene(num_frames, seed)
    with atomic_path(scene_dir) as tmp:
        # files inside are named after the scene folder, so write into <tmp>/<name>
        tmp.mkdir(parents=True)
        inner = tmp / name
        inner.mkdir()
        for view in range(NUM_VIEWS):
            _write_view(scene, inner, view, (height, width), supersample, previews)
        for child in inner.iterdir():
            child.rename(tmp / child.name)
        inner.rmdir()
    return scene_dir


def write_kubric_mini(
    root: str | os.PathLike,
    num_scenes: int = 4,
    num_frames: int = 20,
    size: tuple[int, int] = (128, 192),
    seed: int = 0,
    first_scene: int = 2900,
    supersample: int = 2,
    previews: bool = False,
    only: Sequence[int] | None = None,
) -> list[str]:
    """``kubric-mini``: a few synthetic scenes with known depth, named like the test split.

    Scenes ``scn{first_scene:05d}`` onwards; scene ``i`` uses seed ``seed + i``. Scenes whose folder
    already exists with all 16 view JSONs are kept (so a crashed run resumes).

    Args:
        root: dataset root.
        num_scenes: how many scenes.
        num_frames: frames per view (>= 14 for the GCD protocol).
        size: ``(H, W)`` per frame.
        seed: base seed.
        first_scene: index of the first scene (2900 = first test scene of Kubric-4D).
        supersample: colour sub-pixel rays per side.
        previews: also write preview videos.
        only: write only these scene indices (0-based, e.g. one rank's shard); all ids are still
            returned. ``None`` writes every scene.

    Returns:
        The scene ids written or found, in order.
    """
    if isinstance(num_scenes, bool) or not isinstance(num_scenes, int) or num_scenes < 1:
        raise RecaptureError(f"num_scenes={num_scenes!r} must be a positive integer")
    ids = []
    for i in range(num_scenes):
        name = scene_name(first_scene + i)
        scene_dir = Path(root) / name
        complete = all(view_metadata_path(scene_dir, v).is_file() for v in range(NUM_VIEWS))
        if not complete and (only is None or i in only):
            write_synthetic_scene(
                root, name, num_frames, size, seed + i, supersample, overwrite=True, previews=previews
            )
        ids.append(name)
    return ids
