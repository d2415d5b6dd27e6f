"""A generated example clip (no downloads): a small ray-cast scene with two moving spheres.

The scene, in the camera frame of a static camera at the origin (OpenCV axes: x right, y down,
z forward; camera-to-world pose = identity; 60 degree horizontal field of view):

* ground plane ``y = GROUND_Y`` (1.2 below the camera): checkerboard of 0.5 m tiles, tinted warm
  on the left to cool on the right;
* back wall ``z = WALL_Z`` (10): bricks with mortar lines, darker towards the top;
* a large sphere rolling left to right on the ground at ``z = 4`` (its texture turns as it rolls)
  and a smaller one bouncing right to left behind it at ``z = 5.3``, so the near sphere occludes
  the far one around the middle of the clip;
* Lambertian shading from a directional light with hard shadows cast by the spheres,
  2x2 supersampled colour.

Depth is the exact planar z of the surface seen through each pixel centre (no supersampling).
The scene is a :class:`~recapture.data.procedural.Scene` rendered by the project's one ray caster
(:func:`recapture.data.procedural.render`); :func:`example_scene` returns it, e.g. to render the
same clip from another camera.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recapture.data.procedural import (
    Bricks,
    Checker,
    Light,
    Plane,
    Primitive,
    Scene,
    Tinted,
    render,
)
from recapture.io.video import Video
from recapture.utils import RecaptureError

__all__ = [
    "GROUND_Y",
    "HFOV_DEG",
    "WALL_Z",
    "example_intrinsics",
    "example_scene",
    "make_example_clip",
    "render_example_view",
]

GROUND_Y = 1.2
WALL_Z = 10.0
HFOV_DEG = 60.0
_LIGHT = F.normalize(torch.tensor([-0.45, -1.0, -0.55]), dim=0)  # unit vector towards the light
_AMBIENT, _DIFFUSE = 0.32, 0.78
# sphere textures are longitude/latitude about the object's local z; the example's spheres have
# their poles on the camera's y axis: local = _POLE_Y (R_z(-roll) n) = (m_x, m_z, -m_y)
_POLE_Y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)


def example_intrinsics(height: int, width: int) -> torch.Tensor:
    """Pinhole ``K`` ``(3, 3)`` in pixels: 60 deg horizontal FOV, square pixels, centre ``(W/2, H/2)``.

    Pixel ``(u, v)`` (integer indices) has its centre at ``(u + 0.5, v + 0.5)``.
    """
    f = (width / 2) / math.tan(math.radians(HFOV_DEG) / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def _roll_rotations(roll: torch.Tensor) -> torch.Tensor:
    """World-from-object rotations ``(T, 3, 3)``: a turn by ``roll`` ``(T,)`` about the camera's z."""
    c, s = torch.cos(roll.double()), torch.sin(roll.double())
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rz = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ _POLE_Y.T


def example_scene(num_frames: int = 14, seed: int = 0) -> Scene:
    """The example scene (module docstring) for ``seed``, in the static camera's frame.

    Args:
        num_frames: frames ``T``; the motion spans the clip whatever its length.
        seed: varies colours, sphere sizes, start positions and bounce count (deterministic).

    Returns:
        A :class:`~recapture.data.procedural.Scene` whose world frame is the camera's OpenCV frame.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise RecaptureError(f"num_frames={num_frames!r} must be an integer >= 1")
    g = torch.Generator().manual_seed(seed)

    def jitter(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.rand(*shape, generator=g) * 2 - 1) * scale

    s = torch.linspace(0, 1, num_frames) if num_frames > 1 else torch.zeros(1)
    radii = torch.tensor([0.55, 0.4]) * (1 + jitter(2, scale=0.1))
    x_a = -1.6 + 3.2 * s + jitter(1, scale=0.2)
    x_b = 1.3 - 2.4 * s + jitter(1, scale=0.2)
    bounces = 2 + int(torch.randint(0, 2, (1,), generator=g))
    y_b = GROUND_Y - radii[1] - 0.9 * torch.sin(math.pi * bounces * s).abs()
    centres = [
        torch.stack([x_a, torch.full_like(s, GROUND_Y - float(radii[0])), torch.full_like(s, 4.0)], -1),
        torch.stack([x_b, y_b, torch.full_like(s, 5.3)], -1),
    ]
    # rolling without slipping along +x turns the sphere about +z by dx / r
    roll = [(x_a - x_a[0]) / radii[0], -(x_b - x_b[0]) / radii[1]]

    def colour(r: float, gr: float, b: float, scale: float = 0.06) -> torch.Tensor:
        return (torch.tensor([r, gr, b]) + jitter(3, scale=scale)).clamp(0, 1).double()

    c = {
        name: colour(*rgb)
        for name, rgb in (
            ("tile_a", (0.93, 0.9, 0.82)),
            ("tile_b", (0.34, 0.42, 0.46)),
            ("warm", (1.0, 0.86, 0.7, 0.04)),
            ("cool", (0.72, 0.88, 1.0, 0.04)),
            ("brick", (0.72, 0.33, 0.22)),
            ("mortar", (0.82, 0.8, 0.76, 0.03)),
            ("sphere0_a", (0.12, 0.38, 0.85)),
            ("sphere0_b", (0.98, 0.8, 0.2)),
            ("sphere1_a", (0.85, 0.2, 0.55)),
            ("sphere1_b", (0.95, 0.95, 0.95, 0.03)),
        )
    }
    vec = lambda *x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    wall = Plane(
        origin=vec(0.0, 0.0, WALL_Z),
        normal=vec(0.0, 0.0, -1.0),
        u_axis=vec(1.0, 0.0, 0.0),
        v_axis=vec(0.0, 1.0, 0.0),
        texture=Bricks(c["brick"], c["mortar"], fade_start=GROUND_Y, fade_length=-4.0, salt=float(seed)),
    )
    ground = Plane(
        origin=vec(0.0, GROUND_Y, 0.0),
        normal=vec(0.0, -1.0, 0.0),
        u_axis=vec(1.0, 0.0, 0.0),
        v_axis=vec(0.0, 0.0, 1.0),
        texture=Tinted(
            Checker(torch.stack([c["tile_a"], c["tile_b"]]), cell=(0.5, 0.5)),
            torch.stack([c["warm"], c["cool"]]),
            axis=0,
            start=-3.0,
            length=6.0,
        ),
    )
    # the pole flip negates the latitude, which swaps the checker's parity: swap its colours too
    spheres = [
        Primitive(
            "sphere",
            k + 1,
            centres[k].double(),
            _roll_rotations(roll[k]),
            radii[k : k + 1].double(),
            Checker(torch.stack([c[f"sphere{k}_b"], c[f"sphere{k}_a"]]), cell=(math.pi / 4, math.pi / 6)),
        )
        for k in range(2)
    ]
    return Scene(
        num_frames=num_frames,
        seed=seed,
        objects=spheres,
        planes=[wall, ground],  # the wall wins ties on the line where it meets the ground
        light=Light(_LIGHT.double(), _AMBIENT, _DIFFUSE, shadows=True),
    )


def make_example_clip(
    num_frames: int = 14,
    height: int = 256,
    width: int = 384,
    seed: int = 0,
    fps: float = 8.0,
) -> tuple[Video, torch.Tensor, torch.Tensor]:
    """Render the example scene (see the module docstring) seen from a static camera.

    Args:
        num_frames: frames ``T``; the motion spans the clip whatever its length.
        height: image height ``H`` in pixels.
        width: image width ``W`` in pixels.
        seed: varies colours, sphere sizes, start positions and bounce count (deterministic).
        fps: frame rate stored in the returned :class:`~recapture.io.Video`.

    Returns:
        ``(video, depth, K)``: ``video.frames`` ``(T, 3, H, W)`` float32 in [0, 1], planar depth
        ``(T, 1, H, W)`` in scene units (metres), intrinsics ``K`` ``(3, 3)`` in pixels. The camera
        pose is the identity (camera-to-world, OpenCV axes).
    """
    for name, value, minimum in (("num_frames", num_frames, 1), ("height", height, 8), ("width", width, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise RecaptureError(f"{name}={value!r} must be an integer >= {minimum}")
    if not (math.isfinite(fps) and fps > 0):
        raise RecaptureError(f"fps={fps!r} must be a positive number")
    K = example_intrinsics(height, width)
    out = _render_example(num_frames, seed, torch.eye(4), K, (height, width))
    video = Video(frames=out["rgb"], fps=float(fps), path=None, source_size=(height, width))
    return video, out["depth"][:, None], K


def render_example_view(
    c2w: torch.Tensor, K: torch.Tensor, height: int, width: int, seed: int = 0
) -> torch.Tensor:
    """The example clip's exact novel view: frame ``t`` of the scene seen from camera ``t``.

    The example's source camera is the identity and its depth is in scene units, so an anchor's
    target poses (relative to the source camera, in depth units) are world poses here.

    Args:
        c2w: ``(T, 4, 4)`` OpenCV camera-to-world poses, one per frame.
        K: ``(T, 3, 3)`` or ``(3, 3)`` pixel intrinsics.
        height: ``H``.
        width: ``W``.
        seed: the seed the clip was made with (:func:`make_example_clip`).

    Returns:
        ``(T, 3, H, W)`` float32 in [0, 1], rendered as :func:`make_example_clip` renders the source.
    """
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise RecaptureError(f"c2w must be (T, 4, 4), got {tuple(c2w.shape)}")
    return _render_example(c2w.shape[0], seed, c2w.float().cpu(), K.float().cpu(), (height, width))["rgb"]


def _render_example(
    num_frames: int, seed: int, c2w: torch.Tensor, K: torch.Tensor, size: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """Frame ``t`` of the example scene from camera ``t`` (or one camera for all frames)."""
    # colour is averaged over 2 x 2 sub-pixel rays; depth uses the pixel-centre ray
    return render(example_scene(num_frames, seed), range(num_frames), c2w, K, size, supersample=2)
