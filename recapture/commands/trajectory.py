"""The ``recapture trajectory`` tool command: build or load a trajectory, save it, draw a preview."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from recapture.cameras.conventions import intrinsics_from_fov
from recapture.cameras.formats import FORMATS, load_trajectory, save_trajectory
from recapture.cameras.trajectory import make_trajectory
from recapture.utils import RecaptureError, check_output_folder

log = logging.getLogger(__name__)

_SUFFIX = {"recapture": ".recapture.json", "nerfstudio": "_transforms.json", "colmap": "_colmap",
           "recammaster": "_camera_extrinsics.json", "trajectorycrafter": "_trajectorycrafter.txt",
           "cognvs": "_cognvs.txt"}


def _first_frame(video: Path | None, height: int, width: int) -> torch.Tensor | None:
    """The first frame ``(3, H, W)`` of ``video``, else of the built-in example clip, else None."""
    if video is not None:
        from recapture.io import read_video  # lazy: keeps `recapture trajectory --help` light

        return read_video(video, num_frames=1).frames[0]
    try:
        from recapture.data.example import make_example_clip
    except ImportError:
        return None
    clip, _, _ = make_example_clip(num_frames=1, height=height, width=width)
    return clip.frames[0]


def trajectory(
    output: Path = Path("outputs/trajectory"),
    preset: str = "orbit",
    amount: float = 20.0,
    num_frames: int = 14,
    mode: str = "gradual",
    easing: str = "ease_in_out",
    pivot_depth: float = 1.0,
    file: Path | None = None,
    file_format: str = "auto",
    file_camera: str | None = None,
    video: Path | None = None,
    fov_deg: float = 60.0,
    height: int = 256,
    width: int = 384,
    save_format: str = "recapture",
) -> dict:
    """Build a camera trajectory (or load one from a file), save it as JSON and draw a PNG preview.

    Writes ``<output>/trajectory.json`` (recapture format: OpenCV camera-to-world poses relative to
    the source camera, translations in scene units where 1 = the scene's median depth) and
    ``<output>/trajectory.png`` (camera frustums in 3D over the source camera, plus a top view).
    Signs: pan + turns right, tilt + looks up, roll + turns the picture clockwise,
    truck + moves right, pedestal + moves up, dolly + moves forward, zoom + zooms in, orbit + moves
    right around the pivot, arc + moves up around the pivot, dolly_zoom + dollies in while zooming out.

    Args:
        output: output folder.
        preset: pan, tilt, roll, truck, pedestal, dolly, zoom, orbit, arc or dolly_zoom.
        amount: degrees (pan, tilt, roll, orbit, arc), scene units (truck, pedestal, dolly,
            dolly_zoom) or relative focal change (zoom: 0.5 = x1.5 at the end).
        num_frames: number of frames (a file with another count is resampled).
        mode: gradual (from the source pose to the target) or direct (target on every frame).
        easing: linear or ease_in_out.
        pivot_depth: depth of the orbit/arc pivot and dolly-zoom plane, in scene units; also the
            radius of TrajectoryCrafter/CogNVS text files.
        file: trajectory file to load instead of a preset (recapture JSON, nerfstudio transforms.json,
            COLMAP text model, ReCamMaster camera_extrinsics.json, TrajectoryCrafter/CogNVS .txt).
        file_format: auto, recapture, nerfstudio, colmap, recammaster, trajectorycrafter or cognvs.
        file_camera: camera key in multi-camera files (ReCamMaster: cam01 ... cam10).
        video: source video whose first frame is drawn on the source camera (default: the built-in
            example clip).
        fov_deg: horizontal field of view of the source camera for the preview, in degrees.
        height: preview image height when no video is given.
        width: preview image width when no video is given.
        save_format: also write the trajectory in this format next to trajectory.json
            (recapture = only trajectory.json).

    Returns:
        ``{"trajectory": path, "preview": path, "export": path or None, "summary": {...}}``.
    """
    if save_format not in FORMATS:
        raise RecaptureError(f"--save_format {save_format!r} is not one of {', '.join(FORMATS)}.")
    if file is not None:
        traj = load_trajectory(file, format=file_format, num_frames=num_frames, pivot_depth=pivot_depth,
                               camera=file_camera)
    else:
        traj = make_trajectory(preset, amount, num_frames, mode=mode, easing=easing, pivot_depth=pivot_depth)
    image = _first_frame(video, height, width)
    if image is not None:
        height, width = int(image.shape[-2]), int(image.shape[-1])
    K = intrinsics_from_fov(fov_deg, height, width)

    from recapture.cameras.preview import plot_trajectory

    output = check_output_folder(output, "--output")
    json_path = save_trajectory(traj, output / "trajectory.json")
    caption = f"first frame of {video.name}" if video is not None else "example clip (no --video given)"
    png_path = plot_trajectory(traj, output / "trajectory.png", image=image, K=K, image_title=caption)
    export = None
    if save_format != "recapture":
        export = save_trajectory(traj, output / f"trajectory{_SUFFIX[save_format]}", format=save_format, K=K,
                                 image_size=(height, width), pivot_depth=pivot_depth)
    last = traj.c2w[-1]
    summary: dict[str, Any] = {
        "name": traj.name,
        "num_frames": traj.num_frames,
        "final_position": [round(float(v), 6) for v in last[:3, 3]],
        "final_forward": [round(float(v), 6) for v in last[:3, 2]],
        "final_focal_scale": None if traj.focal_scale is None else float(traj.focal_scale[-1]),
    }
    for label, path in (("trajectory", json_path), ("preview", png_path), ("export", export)):
        if path is not None:
            print(f"{label}: {path}")
    return {"trajectory": json_path, "preview": png_path, "export": export, "summary": summary}
