"""Procedural scenes: seeds and splits, exact depth, camera consistency, shadows, variety, datasets."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from recapture.cameras import PRESETS, look_at, make_trajectory
from recapture.data.procedural import (
    PRESET_RANGES,
    Checker,
    Dome,
    Light,
    Plain,
    Plane,
    Primitive,
    ProceduralVideoDataset,
    ProceduralVideoStream,
    Scene,
    Sky,
    clip_seed,
    make_clip,
    path_is_clear,
    render,
    render_path,
    sample_scene,
)
from recapture.utils import RecaptureError

SIZE = (32, 48)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one torch thread (see tests/conftest.py)."""


def _f64(*x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def _ground(texture=None) -> Plane:
    return Plane(
        _f64(0, 0, 0), _f64(0, 0, 1), _f64(1, 0, 0), _f64(0, 1, 0), texture or Plain(_f64(0.8, 0.8, 0.8))
    )


def _scene(objects: list[Primitive], light: Light, num_frames: int = 1, planes=None) -> Scene:
    return Scene(
        num_frames=num_frames,
        seed=0,
        objects=objects,
        planes=planes if planes is not None else [_ground()],
        light=light,
        dome=Dome(50.0, Sky(_f64(0.7, 0.8, 0.9), _f64(0.3, 0.5, 0.9))),
    )


def _static(
    kind: str, centre: tuple[float, float, float], size: list[float], num_frames: int = 1, k: int = 1
):
    return Primitive(
        kind,
        k,
        _f64(*centre).expand(num_frames, 3).clone(),
        torch.eye(3, dtype=torch.float64).expand(num_frames, 3, 3).clone(),
        _f64(*size),
        Plain(_f64(0.9, 0.2, 0.2)),
    )


def _pixel_rays(K: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Camera-frame directions with z = 1 through the pixel centres: ``(H, W, 3)`` float64."""
    height, width = size
    K = K.double()
    x = (torch.arange(width, dtype=torch.float64) + 0.5 - K[0, 2]) / K[0, 0]
    y = (torch.arange(height, dtype=torch.float64) + 0.5 - K[1, 2]) / K[1, 1]
    return torch.stack(
        [
            x[None].expand(height, -1),
            y[:, None].expand(-1, width),
            torch.ones(height, width, dtype=torch.float64),
        ],
        -1,
    )


def _project(point: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor) -> tuple[float, float, float]:
    cam = c2w[:3, :3].T.double() @ (point.double() - c2w[:3, 3].double())
    uv = K.double() @ (cam / cam[2])
    return float(uv[0]), float(uv[1]), float(cam[2])


# --- seeds and splits -------------------------------------------------------------------------


def test_train_and_eval_seeds_never_collide() -> None:
    n = 100_000
    train = {clip_seed("train", i) for i in range(n)}
    evaluation = {clip_seed("eval", i) for i in range(n)}
    assert len(train) == n and len(evaluation) == n  # injective per split
    assert train.isdisjoint(evaluation)
    assert all(0 <= s < 2**63 for s in train | evaluation)  # fits an int64 (collates into tensors)
    assert clip_seed("train", 2**62 - 1) != clip_seed("eval", 2**62 - 1)
    with pytest.raises(RecaptureError, match="split='test'"):
        clip_seed("test", 0)
    with pytest.raises(RecaptureError, match="index=-1"):
        clip_seed("train", -1)


def test_clips_are_deterministic_per_index() -> None:
    a = make_clip("train", 7, 4, SIZE, with_target=True)
    b = make_clip("train", 7, 4, SIZE, with_target=True)
    va, vb = render_path(a.scene, a.source, SIZE), render_path(b.scene, b.source, SIZE)
    assert a.seed == b.seed == clip_seed("train", 7)
    assert torch.equal(va["video"], vb["video"]) and torch.equal(va["depth"], vb["depth"])
    assert torch.equal(a.target.c2w, b.target.c2w)
    c = make_clip("train", 8, 4, SIZE)
    assert not torch.equal(render_path(c.scene, c.source, SIZE)["video"], va["video"])
    e = make_clip("eval", 7, 4, SIZE)
    assert not torch.equal(render_path(e.scene, e.source, SIZE)["video"], va["video"])
    # drawing a target path does not change the source clip
    plain = make_clip("train", 7, 4, SIZE, with_target=False)
    assert torch.equal(plain.source.c2w, a.source.c2w)
    assert torch.equal(render_path(plain.scene, plain.source, SIZE)["video"], va["video"])


# --- the ray caster ---------------------------------------------------------------------------


def test_ground_and_box_face_depth_are_exact() -> None:
    """A camera at height h pitched down by theta sees the ground at planar depth h / (sin theta + y cos theta)."""
    h, theta = 1.7, math.radians(20.0)
    eye = _f64(0.0, -5.0, h)
    c2w = look_at(eye, eye + _f64(0.0, math.cos(theta), -math.sin(theta)), (0.0, 0.0, 1.0)).double()
    K = _f64(40.0, 0, 24, 0, 41.0, 16, 0, 0, 1).reshape(3, 3)
    scene = _scene([], Light(_f64(0, 0, 1)))
    for dtype, rel in ((torch.float64, 1e-7), (torch.float32, 5e-6)):  # outputs are float32
        out = render(scene, [0], c2w, K, SIZE, dtype=dtype)
        rays = _pixel_rays(K, SIZE)
        y = rays[..., 1]
        sees_ground = math.sin(theta) + y * math.cos(theta) > 0.05
        expected = h / (math.sin(theta) + y * math.cos(theta))
        assert sees_ground.sum() > 500
        depth = out["depth"][0].double()
        assert torch.allclose(depth[sees_ground], expected[sees_ground], rtol=rel, atol=0)
        assert torch.allclose(out["distance"][0].double(), depth * rays.norm(dim=-1), rtol=1e-6)
    # a box face parallel to the image plane has one planar depth (not one distance)
    box = _static("box", (0.0, 4.0, 1.0), [0.5, 0.5, 0.5])
    cam = look_at(_f64(0.0, -2.0, 1.0), _f64(0.0, 4.0, 1.0), (0.0, 0.0, 1.0)).double()
    out = render(_scene([box], Light(_f64(0, 0, 1))), [0], cam, K, SIZE, dtype=torch.float64)
    face = out["segmentation"][0] == 1
    assert face.sum() > 30
    assert torch.allclose(
        out["depth"][0][face].double(), torch.full((int(face.sum()),), 5.5, dtype=torch.float64)
    )
    assert out["distance"][0][face].std() > 0.01


def test_static_point_moves_as_the_camera_pose_says() -> None:
    """A small static marker sphere seen from an orbiting camera is where c2w and K project it."""
    T = 5
    marker, radius = _f64(1.2, -1.0, 0.6), 0.3
    scene = _scene([_static("sphere", tuple(marker.tolist()), [radius], T)], Light(_f64(0, 0, 1)), T)
    base = look_at(_f64(0.0, -6.0, 2.0), _f64(0.0, 0.0, 0.5), (0.0, 0.0, 1.0)).double()
    c2w = base @ make_trajectory("orbit", 30.0, T, pivot_depth=1.0).scaled(6.2).c2w.double()
    K = _f64(50.0, 0, 24, 0, 50.0, 16, 0, 0, 1).reshape(3, 3)
    out = render(scene, range(T), c2w, K, SIZE, dtype=torch.float64)
    us = []
    for t in range(T):
        u, v, z = _project(marker, c2w[t], K)
        mask = out["segmentation"][t] == 1
        rows, cols = mask.nonzero(as_tuple=True)
        assert len(rows) >= 3
        assert (
            abs(float(cols.double().mean() + 0.5) - u) < 0.5
            and abs(float(rows.double().mean() + 0.5) - v) < 0.5
        )
        # the nearest surface point is a radius closer than the centre (up to the pixel's offset)
        assert float(out["depth"][t][mask].min()) == pytest.approx(z - radius, abs=0.02)
        us.append(u)
    assert max(us) - min(us) > 4  # the camera really moved


@pytest.mark.parametrize("index", range(6))
def test_unprojected_static_pixels_lie_on_the_static_surfaces(index: int) -> None:
    """Moving cameras: every pixel seeing a plane or the dome, unprojected with the returned c2w and K, is on it."""
    clip = make_clip("eval", index, 6, SIZE, with_target=True)
    for path in (clip.source, clip.target):
        out = render(clip.scene, range(6), path.c2w, path.K, SIZE, dtype=torch.float64)
        for t in (0, 5):
            cam = _pixel_rays(path.K[t], SIZE) * out["depth"][t].double()[..., None]
            world = cam @ path.c2w[t, :3, :3].T + path.c2w[t, :3, 3]
            static = out["segmentation"][t] == 0
            tol = 1e-5 * out["depth"][t].double()  # depth comes back as float32
            on_plane = torch.zeros_like(static)
            for plane in clip.scene.planes:
                on_plane |= ((world - plane.origin) @ plane.normal).abs() < tol
            dome = clip.scene.dome
            on_dome = ((world - dome.centre).norm(dim=-1) - dome.radius).abs() < tol
            assert bool((on_plane | on_dome)[static].all())
            if (~static).any():  # objects are not on the static surfaces
                assert not bool((on_plane | on_dome)[~static].all())


def test_render_is_independent_of_batching() -> None:
    clip = make_clip("eval", 3, 4, SIZE, with_target=True)
    both = render(
        clip.scene,
        [0, 1, 2, 3, 2],
        torch.cat([clip.source.c2w, clip.target.c2w[2:3]]),
        torch.cat([clip.source.K, clip.target.K[2:3]]),
        SIZE,
    )
    alone = render(clip.scene, [2], clip.target.c2w[2:3], clip.target.K[2:3], SIZE)
    small = render(
        clip.scene,
        [0, 1, 2, 3, 2],
        torch.cat([clip.source.c2w, clip.target.c2w[2:3]]),
        torch.cat([clip.source.K, clip.target.K[2:3]]),
        SIZE,
        max_rays=1,
    )
    # Equal up to float32 rounding: the ray maths is the same, but BLAS kernels (the batched
    # rotations) may round a frame differently with another number of frames in the call (seen on
    # AVX-512 CPUs; bit-for-bit on AVX2). A frame rendered with the wrong camera or time differs by
    # far more than this tolerance.
    for key in ("rgb", "depth"):
        torch.testing.assert_close(both[key][4], alone[key][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(both[key], small[key], rtol=1e-5, atol=1e-5)
    assert torch.equal(both["segmentation"][4], alone["segmentation"][0])
    assert torch.equal(both["segmentation"], small["segmentation"])


def test_shadows_darken_the_ground_under_an_object() -> None:
    ambient, diffuse = 0.3, 0.6
    sphere = _static("sphere", (0.0, 0.0, 1.5), [0.5])
    cam = look_at(_f64(0.0, -4.0, 4.0), _f64(0.0, 0.0, 0.0), (0.0, 0.0, 1.0)).double()
    K = _f64(40.0, 0, 24, 0, 40.0, 16, 0, 0, 1).reshape(3, 3)
    for shadows in (True, False):
        light = Light(_f64(0, 0, 1), ambient, diffuse, shadows=shadows)
        rgb = render(_scene([sphere], light), [0], cam, K, SIZE, dtype=torch.float64)["rgb"][0]
        u, v, _ = _project(_f64(0.0, -0.25, 0.0), cam, K)  # on the ground under the sphere, in view
        under = rgb[:, int(v), int(u)]
        u, v, _ = _project(_f64(1.6, 0.0, 0.0), cam, K)  # on the ground, away from the sphere
        open_ground = rgb[:, int(v), int(u)]
        assert torch.allclose(open_ground, _f64(0.8, 0.8, 0.8).float() * (ambient + diffuse), atol=1e-6)
        expected = 0.8 * ambient if shadows else 0.8 * (ambient + diffuse)
        assert torch.allclose(under, torch.full((3,), expected), atol=1e-6)
    # and in generated scenes: with shadows switched off, nothing gets darker and shadows vanish
    brighter = []
    for index in range(4):
        clip = make_clip("eval", index, 3, SIZE)
        lit = render_path(clip.scene, clip.source, SIZE)["video"]
        clip.scene.light.shadows = False
        unshadowed = render_path(clip.scene, clip.source, SIZE)["video"]
        assert (unshadowed - lit).min() >= 0
        brighter.append(float((unshadowed - lit).amax()))
    assert max(brighter) > 0.2


def test_textures_and_boxes_rotate_with_the_object() -> None:
    """A box turned 90 degrees about z looks like the unturned box seen from a camera turned the other way."""
    tex = Checker(_f64(0.9, 0.2, 0.1, 0.1, 0.3, 0.9).reshape(2, 3), cell=(0.3, 0.3))
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    boxes = [
        Primitive("box", 1, _f64(0, 0, 0.6)[None], r[None], _f64(0.9, 0.5, 0.6), tex)
        for r in (torch.eye(3, dtype=torch.float64), rot)
    ]
    light = Light(_f64(0, 0, 1), 0.5, 0.5, shadows=False)
    K = _f64(40.0, 0, 24, 0, 40.0, 16, 0, 0, 1).reshape(3, 3)
    cam = look_at(_f64(3.0, -4.0, 3.0), _f64(0.0, 0.0, 0.5), (0.0, 0.0, 1.0)).double()
    turned_cam = cam.clone()
    turned_cam[:3] = rot.T @ cam[:3]  # rotate the whole camera by -90 degrees about z
    a = render(_scene([boxes[1]], light, planes=[]), [0], cam, K, SIZE, dtype=torch.float64)
    b = render(_scene([boxes[0]], light, planes=[]), [0], turned_cam, K, SIZE, dtype=torch.float64)
    on_box = a["segmentation"][0] == 1
    assert on_box.sum() > 100 and torch.equal(on_box, b["segmentation"][0] == 1)
    assert torch.allclose(a["depth"][0], b["depth"][0], rtol=1e-6)
    # the checker is fixed to the box: the same colours land on the same pixels
    assert (a["rgb"][0][:, on_box] - b["rgb"][0][:, on_box]).abs().amax() < 1e-5


# --- variety and plausibility ------------------------------------------------------------------


def test_no_exact_black_pixels() -> None:
    for index in range(6):
        clip = make_clip("eval", index, 3, SIZE)
        video = render_path(clip.scene, clip.source, SIZE, supersample=2)["video"]
        assert video.min() > 0.01
        assert (video * 255).round().min() >= 3  # also after 8-bit quantisation


def test_scenes_are_varied_and_physically_plausible() -> None:
    grounds, skies, counts, motions, walls, kinds = set(), set(), set(), set(), set(), set()
    for seed in range(60):
        scene = sample_scene(clip_seed("train", seed), 6)
        grounds.add(scene.meta["ground"])
        skies.add(scene.meta["sky"])
        walls.update(scene.meta["walls"] or ["open"])
        counts.add(len(scene.objects))
        for i, obj in enumerate(scene.objects):
            motions.add(obj.motion)
            kinds.add(obj.kind)
            assert obj.instance_id == i + 1
            # nothing sinks into the ground; rolling and sliding objects touch it
            if obj.kind == "sphere":
                bottom = obj.centres[:, 2] - obj.size[0]
            else:
                bottom = obj.centres[:, 2] - (obj.rotations[:, 2, :].abs() * obj.size).sum(-1)
            assert float(bottom.min()) > -1e-9
            if obj.motion in ("roll", "slide"):
                assert torch.allclose(bottom, torch.zeros_like(bottom), atol=1e-9)
            assert torch.allclose(
                obj.rotations @ obj.rotations.transpose(1, 2),
                torch.eye(3, dtype=torch.float64).expand(6, 3, 3),
                atol=1e-9,
            )
            for other in scene.objects[:i]:  # paths never intersect
                gap = (obj.centres - other.centres).norm(dim=-1).min()
                assert float(gap) > obj.bounding_radius + other.bounding_radius
        light = scene.light.direction
        assert light[2] > 0.4 and scene.light.shadows
    assert grounds == {"checker", "tiles", "stripes", "noise"}
    assert skies == {"gradient", "clouds", "stripes"}
    assert walls == {"open", "bricks", "plain", "gradient"}
    assert counts == {1, 2, 3, 4, 5}
    assert motions == {"roll", "slide", "bounce", "turn"} and kinds == {"sphere", "box"}


def test_camera_paths_are_varied_and_clear() -> None:
    assert set(PRESET_RANGES) == set(PRESETS)
    names, moving = set(), 0
    for index in range(150):
        clip = make_clip("train", index, 6, SIZE, with_target=True)
        for path in (clip.source, clip.target):
            assert path.c2w.shape == (6, 4, 4) and path.K.shape == (6, 3, 3)
            assert path_is_clear(clip.scene, path.c2w)
        names.add(clip.source.name.split()[0])
        names.update(part.split()[0] for part in clip.target.name.split(" + "))
        moving += not torch.allclose(clip.source.c2w[0], clip.source.c2w[-1])
        assert torch.allclose(clip.source.c2w @ clip.relative_c2w, clip.target.c2w, atol=1e-9)
    assert {"static", "smooth"} | set(PRESETS) <= names
    assert moving > 100
    only_static = make_clip("train", 0, 4, SIZE, camera_motions=("static",))
    assert torch.equal(only_static.source.c2w[0], only_static.source.c2w[-1])
    with pytest.raises(RecaptureError, match="motions="):
        make_clip("train", 0, 4, SIZE, camera_motions=("handheld",))


# --- datasets ----------------------------------------------------------------------------------


def test_map_dataset_items() -> None:
    ds = ProceduralVideoDataset("eval", num_clips=3, num_frames=4, height=16, width=24)
    assert len(ds) == 3
    item = ds[1]
    assert item["video"].shape == item["target_video"].shape == (4, 3, 16, 24)
    assert item["video"].dtype == torch.float32 and 0 <= item["video"].min() and item["video"].max() <= 1
    assert item["depth"].shape == item["target_depth"].shape == (4, 1, 16, 24)
    assert item["K"].shape == (4, 3, 3) and item["c2w"].shape == item["relative_c2w"].shape == (4, 4, 4)
    assert torch.allclose(item["c2w"] @ item["relative_c2w"], item["target_c2w"], atol=1e-4)
    assert item["seed"] == clip_seed("eval", 1) and item["index"] == 1
    assert isinstance(item["camera"], str) and isinstance(item["target_camera"], str)
    again = ds[1]
    assert torch.equal(item["video"], again["video"]) and torch.equal(
        item["target_depth"], again["target_depth"]
    )
    with pytest.raises(IndexError):
        ds[3]
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["video"].shape == (2, 4, 3, 16, 24)


def test_stream_is_endless_sharded_and_matches_the_map_dataset() -> None:
    kwargs = dict(num_frames=3, height=16, width=24)
    stream = ProceduralVideoStream("train", start_index=5, rank=1, world_size=2, **kwargs)
    assert list(itertools.islice(stream.indices(), 4)) == [6, 8, 10, 12]
    first = next(iter(stream))
    assert set(first) == {"video", "index", "seed", "camera"} and first["index"] == 6
    ref = ProceduralVideoDataset("train", num_clips=10, with_geometry=False, with_target=False, **kwargs)[6]
    assert torch.equal(first["video"], ref["video"])
    assert list(itertools.islice(ProceduralVideoStream(**kwargs).indices(), 3)) == [0, 1, 2]
    with pytest.raises(RecaptureError, match="rank=2"):
        next(iter(ProceduralVideoStream(rank=2, world_size=2, **kwargs)))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"split": "test"}, "split='test'"),
        ({"height": 4}, "size="),
        ({"supersample": 0}, "supersample=0"),
        ({"num_frames": 0}, "num_frames=0"),
    ],
)
def test_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(RecaptureError) as err:
        ProceduralVideoDataset(**{"num_clips": 1, **kwargs})
    assert needle in str(err.value)


def test_render_checks_cameras() -> None:
    scene = _scene([], Light(_f64(0, 0, 1)), num_frames=2)
    with pytest.raises(RecaptureError, match="out of range"):
        render(scene, [2], torch.eye(4), torch.eye(3), SIZE)
    with pytest.raises(RecaptureError, match=r"c2w \(4, 4\) or \(2, 4, 4\)"):
        render(scene, [0, 1], torch.eye(4).expand(3, 4, 4), torch.eye(3), SIZE)
