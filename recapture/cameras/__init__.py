"""Cameras: one pose convention, intrinsics, trajectory presets, trajectory files and previews.

**Convention.** A pose is a ``(..., 4, 4)`` camera-to-world matrix with OpenCV camera axes
(x right, y down, z forward); ``K`` is ``(..., 3, 3)`` in pixels. A trajectory's poses are relative
to the source camera of each frame; translations are in scene units (1 = the scene's median depth).
Converters exist for OpenGL/Blender (:func:`opencv_to_opengl`), world-to-camera (:func:`c2w_to_w2c`)
and the file formats in :mod:`recapture.cameras.formats`.

**Sign conventions of the presets** (``make_trajectory(preset, amount, num_frames)``):

==============  ===========  ==============================================================
preset          unit         positive amount
==============  ===========  ==============================================================
``pan``         degrees      turns right (yaw about the camera's y axis; centre fixed)
``tilt``        degrees      looks up (pitch about the camera's x axis; centre fixed)
``roll``        degrees      turns the picture clockwise: the scene rotates clockwise about
                             the image centre in the video (a point right of the centre moves
                             down); the camera turns counter-clockwise about its optical axis
                             as seen from behind it
``truck``       scene units  moves right (+x)
``pedestal``    scene units  moves up (-y)
``dolly``       scene units  moves forward (+z)
``zoom``        relative     zooms in: focal x (1 + amount) at the end; must be > -1
``orbit``       degrees      moves right on a circle around the pivot (0, 0, pivot_depth),
                             looking at it
``arc``         degrees      moves up on a vertical circle around the pivot, looking at it
``dolly_zoom``  scene units  dollies forward while zooming out so the plane at pivot_depth
                             keeps its size (vertigo); must be < pivot_depth
==============  ===========  ==============================================================

``mode="gradual"`` moves from the source pose (first frame) to the target (last frame);
``mode="direct"`` jumps to the target for every frame. ``easing`` is ``"linear"`` or
``"ease_in_out"``. Moves compose per frame with :func:`compose` (later moves act in the camera frame
produced by earlier ones); :func:`from_keyframes` interpolates key poses (rotation slerp, linear
translation).
"""

from recapture.cameras.conventions import (
    c2w_to_w2c,
    fov_from_intrinsics,
    intrinsics_from_fov,
    look_at,
    opencv_to_opengl,
    opengl_to_opencv,
    spherical_to_c2w,
    w2c_to_c2w,
)
from recapture.cameras.formats import FORMATS, load_trajectory, save_trajectory, validate_c2w
from recapture.cameras.poses import interpolate_poses, invert_pose, make_pose
from recapture.cameras.spec import MoveSpec, TrajectorySpec
from recapture.cameras.trajectory import (
    PRESETS,
    Trajectory,
    compose,
    from_keyframes,
    make_trajectory,
)

__all__ = [
    "FORMATS",
    "PRESETS",
    "MoveSpec",
    "Trajectory",
    "TrajectorySpec",
    "c2w_to_w2c",
    "compose",
    "fov_from_intrinsics",
    "from_keyframes",
    "interpolate_poses",
    "intrinsics_from_fov",
    "invert_pose",
    "load_trajectory",
    "look_at",
    "make_pose",
    "make_trajectory",
    "opencv_to_opengl",
    "opengl_to_opencv",
    "plot_trajectory",
    "save_trajectory",
    "spherical_to_c2w",
    "validate_c2w",
    "w2c_to_c2w",
]


def __getattr__(name: str):  # matplotlib is imported only when a preview is drawn
    if name == "plot_trajectory":
        from recapture.cameras.preview import plot_trajectory

        return plot_trajectory
    raise AttributeError(f"module 'recapture.cameras' has no attribute {name!r}")
