"""The ``recapture trajectory`` tool command: build or load a trajectory, save it, draw a preview."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from recapture.cameras.conventions import intrinsics_from_fov
from recapture.cameras.formats import FORMATS, save_trajectory
from recapture.cameras.spec import TrajectorySpec
from recapture.cameras.trajectory import Trajectory
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


def _build(trajectory: TrajectorySpec | dict, num_frames: int) -> tuple[TrajectorySpec, Trajectory]:
    """The checked spec and its trajectory, built by :meth:`TrajectorySpec.build` (a dict is the spec's fields).

    Errors name the ``--trajectory.*`` option the user typed (``--trajectory.preset must be ...``,
    ``--trajectory needs a `preset` ...``) rather than the class.
    """
    try:
        if not isinstance(trajectory, TrajectorySpec):  # jsonargparse adds __path__ for --trajectory FILE
            trajectory = TrajectorySpec(**{k: v for k, v in dict(trajectory).items() if not k.startswith("__")})
        spec = trajectory
        return spec, spec.build(num_frames)
    except RecaptureError as err:
        message = str(err).replace("TrajectorySpec.", "--trajectory.").replace("TrajectorySpec ", "--trajectory ")
        raise RecaptureError(message) from err
    except TypeError as err:  # not a mapping, or unknown keys (Python callers)
        raise RecaptureError(f"--trajectory must be a TrajectorySpec or a dict of its fields: {err}") from err


def trajectory(
    trajectory: TrajectorySpec = TrajectorySpec(),
    num_frames: int = 14,
    output: Path = Path("outputs/trajectory"),
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
    The ``--trajectory.*`` options are those of ``--data.trajectory.*`` in ``recapture fit``: a
    preset (``--trajectory.preset orbit --trajectory.amount 30``), a composition
    (``--trajectory.moves '[{preset: orbit, amount: 20}, {preset: dolly, amount: 0.1}]'``) or a
    file (``--trajectory.file cams.json``).
    Signs: pan + turns right, tilt + looks up, roll + turns the picture clockwise,
    truck + moves right, pedestal + moves up, dolly + moves forward, zoom + zooms in, orbit + moves
    right around the pivot, arc + moves up around the pivot, dolly_zoom + dollies in while zooming out.

    Args:
        trajectory: the camera trajectory to build: a preset, a composition of moves or a file.
        num_frames: number of frames (a file with another count is resampled).
        output: output folder.
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
    spec, traj = _build(trajectory, num_frames)
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
                                 image_size=(height, width), pivot_depth=spec.pivot_depth)
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
