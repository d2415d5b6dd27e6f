"""The generated example clip: analytic depth, shapes, determinism, motion."""

from __future__ import annotations

import math

import pytest
import torch

from recapture.data.example import GROUND_Y, WALL_Z, example_intrinsics, example_scene, make_example_clip
from recapture.data.procedural import render
from recapture.io import Video
from recapture.utils import RecaptureError


@pytest.fixture(scope="module")
def clip() -> tuple[Video, torch.Tensor, torch.Tensor]:
    return make_example_clip(num_frames=6, height=64, width=96, seed=0)


def test_shapes_and_ranges(clip) -> None:
    video, depth, K = clip
    assert isinstance(video, Video) and video.fps == 8.0 and video.source_size == (64, 96)
    assert video.frames.shape == (6, 3, 64, 96) and video.frames.dtype == torch.float32
    assert depth.shape == (6, 1, 64, 96) and K.shape == (3, 3)
    assert 0.0 <= video.frames.min() and video.frames.max() <= 1.0
    assert video.frames.std() > 0.1  # textured, not flat
    assert torch.isfinite(depth).all() and depth.min() > 1.0 and depth.max() <= WALL_Z + 1e-5
    # 60 degree horizontal field of view, principal point at the image centre
    assert K[0, 0] == pytest.approx(48 / math.tan(math.radians(30)))
    assert K[1, 1] == K[0, 0] and K[0, 2] == 48 and K[1, 2] == 32


def test_ground_and_wall_depth_are_exact(clip) -> None:
    video, depth, K = clip
    fy, cy = float(K[1, 1]), float(K[1, 2])
    # the bottom corners see the ground plane y = GROUND_Y: planar z = GROUND_Y * fy / (v + 0.5 - cy)
    v = 63
    expected = GROUND_Y * fy / (v + 0.5 - cy)
    assert depth[:, 0, v, 0] == pytest.approx([expected] * 6, rel=1e-5)
    assert depth[:, 0, v, 95] == pytest.approx([expected] * 6, rel=1e-5)
    # the top row sees the back wall at z = WALL_Z
    assert depth[:, 0, 0, :].sub(WALL_Z).abs().max() < 1e-5


def test_deterministic_per_seed() -> None:
    a, da, _ = make_example_clip(num_frames=3, height=32, width=64, seed=3)
    b, db, _ = make_example_clip(num_frames=3, height=32, width=64, seed=3)
    c, _, _ = make_example_clip(num_frames=3, height=32, width=64, seed=4)
    assert torch.equal(a.frames, b.frames) and torch.equal(da, db)
    assert not torch.equal(a.frames, c.frames)


def test_spheres_move(clip) -> None:
    video, depth, _ = clip
    background = depth.amax(dim=0, keepdim=True)  # nothing is ever farther than the static scene
    on_sphere = depth < background - 1e-3  # (T, 1, H, W): pixels covered by a sphere at frame t
    assert on_sphere.flatten(1).any(dim=1).all()  # a sphere is visible in every frame
    for t in range(video.num_frames - 1):
        assert (on_sphere[t] != on_sphere[t + 1]).sum() > 20  # ...and moves between frames
        assert (video.frames[t] - video.frames[t + 1]).abs().amax() > 0.2


def test_example_scene_renders_the_clip_from_any_camera() -> None:
    video, depth, K = make_example_clip(num_frames=3, height=32, width=64, seed=2)
    scene = example_scene(3, seed=2)
    out = render(scene, range(3), torch.eye(4), example_intrinsics(32, 64), (32, 64), supersample=2)
    assert torch.equal(out["rgb"], video.frames) and torch.equal(out["depth"][:, None], depth)
    # a camera 0.5 m to the right (novel view of the same scene): the wall is still at z = 10
    right = torch.eye(4)
    right[0, 3] = 0.5
    moved = render(scene, range(3), right, K, (32, 64))
    assert moved["depth"][:, 0].sub(WALL_Z).abs().max() < 1e-5
    assert not torch.equal(moved["rgb"], out["rgb"])


def test_default_size() -> None:
    # speed (about 0.25 s on 2 free cores) is not asserted: wall and CPU time are unreliable on
    # shared CI machines
    video, depth, _ = make_example_clip()
    assert video.frames.shape == (14, 3, 256, 384) and depth.shape == (14, 1, 256, 384)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"num_frames": 0}, "num_frames=0"), ({"height": 4}, "height=4"), ({"fps": 0.0}, "fps=0.0")],
)
def test_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(RecaptureError) as err:
        make_example_clip(**kwargs)
    assert needle in str(err.value)


def test_the_example_truth_matches_the_source_and_the_anchor() -> None:
    """render_example_view: the identity camera gives the source clip bit for bit; the anchor's
    target cameras give a view the anchor agrees with on the pixels it knows (both rendered exactly)."""
    from recapture.data.example import render_example_view
    from recapture.metrics import compute_metrics
    from recapture.training.datamodule import ReCaptureDataModule

    video, _, K = make_example_clip(num_frames=3, height=64, width=96)
    same = render_example_view(torch.eye(4).expand(3, 4, 4), K, 64, 96)
    assert torch.equal(same, video.frames)

    dm = ReCaptureDataModule(video="example", num_frames=3, size=(64, 96), latent_cache_dir=None)
    dm.anchor.cache_dir = None
    truth = dm.ground_truth()
    anchor = dm.build_anchor().anchor
    assert truth.shape == (3, 3, 64, 96)
    assert not torch.equal(truth[-1], video.frames[-1])  # the camera moved
    # the orbit starts at the source camera: frame 0 of the (footprint-1) anchor is the truth exactly
    assert dm.anchor.footprint == 1 and torch.equal(anchor.frames[0], truth[0])
    dm.anchor.footprint, dm.anchor_result = 3, None  # the demo's setting keeps every visible point too
    assert torch.equal(dm.build_anchor().anchor.frames[0], truth[0])
    dm.anchor.footprint, dm.anchor_result = 1, None
    # later frames: the anchor agrees with the truth at its own cameras clearly better than with
    # cameras 10% nearer or farther along the path (what is left is resampling of fine textures)
    def agreement(scale: float) -> float:
        c2w = dm.build_anchor().c2w.clone()
        c2w[:, :3, 3] *= scale
        view = truth if scale == 1.0 else render_example_view(c2w, dm.build_anchor().K, 64, 96)
        return compute_metrics(anchor.frames[1:], view[1:], mask=anchor.mask[1:], metrics=("psnr",))["psnr_masked"]

    exact = agreement(1.0)
    assert exact > 17.0 and exact > agreement(0.9) + 2.0 and exact > agreement(1.1) + 2.0
    # where the anchor has holes it is black; the truth is not
    assert float(truth.mean(1, keepdim=True)[anchor.mask < 0.5].mean()) > 0.1
    # a real video has no truth
    assert ReCaptureDataModule(video="clip.mp4", latent_cache_dir=None).ground_truth() is None
