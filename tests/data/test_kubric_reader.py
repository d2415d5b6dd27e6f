"""Kubric-4D reader round trip on a generated scene: layout, cameras, depth conversion, segmentation, errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recapture.cameras.poses import quaternion_to_matrix
from recapture.data.kubric import (
    distance_to_planar,
    kubric_to_opencv_c2w,
    load_scene,
    opencv_c2w_to_kubric,
    planar_to_distance,
    spherical_pose,
    view_spherical,
    write_kubric_mini,
    write_synthetic_scene,
)
from recapture.data.kubric.raycast import make_scene, render_view
from recapture.data.kubric.synthetic import synthetic_view_camera
from recapture.utils import RecaptureError

SIZE = (48, 72)  # (H, W), the dataset's 1.5 aspect
FRAMES = 4
SEED = 5


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kubric")
    write_synthetic_scene(root, 2900, num_frames=FRAMES, size=SIZE, seed=SEED, supersample=1)
    return root


@pytest.fixture(scope="module")
def truth():
    """The generator's exact renders of every view (same scene as on disk)."""
    scene = make_scene(FRAMES, SEED)
    out = {}
    for v in range(16):
        c2w, K = synthetic_view_camera(v, SIZE)
        out[v] = render_view(scene, list(range(FRAMES)), c2w, K, SIZE, supersample=1)
    return scene, out


def test_layout_and_metadata(root) -> None:
    scene_dir = root / "scn02900"
    names = {p.name for p in scene_dir.iterdir()}
    assert names == {f"scn02900_p0_v{v}.json" for v in range(16)} | {f"frames_p0_v{v}" for v in range(16)}
    frames = {p.name for p in (scene_dir / "frames_p0_v4").iterdir()}
    assert frames == {
        f"{k}_{t:05d}.{e}"
        for t in range(FRAMES)
        for k, e in (("rgba", "png"), ("depth", "tiff"), ("segmentation", "png"))
    }
    meta = json.loads((scene_dir / "scn02900_p0_v4.json").read_text())
    assert meta["scene"]["resolution"] == [72, 48] and meta["scene"]["num_frames"] == FRAMES
    assert meta["scene"]["frame_rate"] == 24
    assert meta["camera"]["focal_length"] == 32 and meta["camera"]["sensor_width"] == 32
    assert meta["camera"]["field_of_view"] == pytest.approx(0.9273, abs=1e-4)
    assert np.allclose(meta["camera"]["K"], [[1, 0, -0.5], [0, -1.5, -0.5], [0, 0, -1]])
    q = np.asarray(meta["camera"]["quaternions"])
    assert q.shape == (FRAMES, 4) and np.allclose(np.linalg.norm(q, axis=1), 1)
    az, el = math.radians(15), math.radians(5)
    expected = 15 * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]) + [
        0,
        0,
        1,
    ]
    assert np.allclose(meta["camera"]["positions"], [expected] * FRAMES, atol=1e-9)
    with Image.open(scene_dir / "frames_p0_v4" / "rgba_00000.png") as img:
        assert img.mode == "RGBA" and img.size == (72, 48)
    with Image.open(scene_dir / "frames_p0_v4" / "segmentation_00000.png") as img:
        assert img.mode == "P"


def test_cameras_are_the_dataset_poses_in_opencv(root) -> None:
    scene = load_scene(root, "scn02900")
    assert (
        scene.size == SIZE
        and scene.num_frames == FRAMES
        and scene.fps == 24
        and scene.views == tuple(range(16))
    )
    K = scene.intrinsics(4)
    assert torch.allclose(K, torch.tensor([[72.0, 0, 36], [0, 72, 24], [0, 0, 1]], dtype=torch.float64))
    assert torch.allclose(
        scene.intrinsics(4, (384, 576)),
        torch.tensor([[576.0, 0, 288], [0, 576, 192], [0, 0, 1]], dtype=torch.float64),
    )
    target = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    for v in range(16):
        c2w = scene.c2w(v)
        assert c2w.shape == (FRAMES, 4, 4)
        assert torch.allclose(
            c2w, spherical_pose(*view_spherical(v)).double().expand(FRAMES, 4, 4), atol=1e-6
        )
        R, pos = c2w[0, :3, :3], c2w[0, :3, 3]
        assert torch.allclose(R.T @ R, torch.eye(3, dtype=torch.float64), atol=1e-9)
        assert torch.linalg.det(R) == pytest.approx(1.0)
        # looks at (0, 0, 1): it projects to the principal point; the horizon is level; world up is image up
        cam = R.T @ (target - pos)
        assert (
            cam[2] == pytest.approx(15.0)
            and cam[0] == pytest.approx(0, abs=1e-9)
            and cam[1] == pytest.approx(0, abs=1e-9)
        )
        assert R[2, 0] == pytest.approx(0, abs=1e-9) and R[2, 1] < 0
    # Blender quaternions: camera +z (column 2 of the Blender rotation) points away from the look-at point
    pos, quat = opencv_c2w_to_kubric(scene.c2w(4))
    assert torch.allclose(kubric_to_opencv_c2w(pos, quat), scene.c2w(4), atol=1e-12)
    blender_z = quaternion_to_matrix(torch.tensor(scene.metadata[4]["camera"]["quaternions"][0]))[:, 2]
    away = pos[0] - target
    assert torch.allclose(blender_z.double(), away / away.norm(), atol=1e-6)


def test_world_points_project_to_the_same_pixel_as_the_ray_caster(root, truth) -> None:
    scene = load_scene(root, 2900)
    _, out = truth
    height, width = SIZE
    spheres_checked = 0
    for v in (0, 4, 11):
        c2w_gen, K_gen = synthetic_view_camera(v, SIZE)
        assert torch.allclose(scene.intrinsics(v), K_gen) and torch.allclose(
            scene.c2w(v)[0], c2w_gen, atol=1e-12
        )
        # unproject every pixel centre with the READ depth and cameras, re-project with the generator's
        depth = scene.read_depth(v, 1)[0, 0].double()
        K, c2w = scene.intrinsics(v), scene.c2w(v)[1]
        u = torch.arange(width, dtype=torch.float64) + 0.5
        w = torch.arange(height, dtype=torch.float64) + 0.5
        cam = torch.stack(
            [
                ((u - K[0, 2]) / K[0, 0])[None].expand(height, -1),
                ((w - K[1, 2]) / K[1, 1])[:, None].expand(-1, width),
                torch.ones(height, width, dtype=torch.float64),
            ],
            -1,
        )
        world = (cam * depth[..., None]) @ c2w[:3, :3].T + c2w[:3, 3]
        back = (world - c2w_gen[:3, 3]) @ c2w_gen[:3, :3]
        uv = back[..., :2] / back[..., 2:] * torch.stack([K_gen[0, 0], K_gen[1, 1]]) + torch.stack(
            [K_gen[0, 2], K_gen[1, 2]]
        )
        assert torch.allclose(uv[..., 0], u[None].expand(height, -1), atol=1e-4)
        assert torch.allclose(uv[..., 1], w[:, None].expand(-1, width), atol=1e-4)
        # and the points lie on the analytic surfaces named by the segmentation
        seg = scene.read_segmentation(v, 1)[0, 0]
        assert torch.equal(seg, out[v]["segmentation"][1])
        gen = make_scene(FRAMES, SEED)
        radius = world.norm(dim=-1)
        ground, dome = (seg == 0) & (radius < 39.0), (seg == 0) & (radius >= 39.0)
        assert ground.sum() > 100 and world[..., 2][ground].abs().max() < 2e-4  # the plane z = 0
        assert torch.allclose(radius[dome], torch.full_like(radius[dome], gen.dome_radius), atol=2e-4)
        for obj in gen.objects:
            if obj.kind != "sphere" or not bool((seg == obj.instance_id).any()):
                continue
            centre = torch.tensor(scene.metadata[v]["instances"][obj.instance_id - 1]["positions"][1])
            radius = scene.metadata[v]["instances"][obj.instance_id - 1]["size"][0]
            dist = (world[seg == obj.instance_id] - centre).norm(dim=-1)
            assert torch.allclose(dist, torch.full_like(dist, radius), atol=2e-4)
            spheres_checked += 1
    assert spheres_checked >= 3


def test_depth_conversion_is_exact(root, truth) -> None:
    scene = load_scene(root, 2900)
    _, out = truth
    for v in (3, 4):
        distance = scene.read_distance(v)
        assert distance.shape == (FRAMES, 1, *SIZE) and distance.dtype == torch.float32
        assert torch.equal(distance[:, 0], out[v]["distance"])  # float32 TIFF round trip
        planar = scene.read_depth(v)
        assert torch.allclose(planar[:, 0], out[v]["depth"], rtol=2e-6)
        K = scene.intrinsics(v)
        assert torch.allclose(planar_to_distance(planar, K), distance, rtol=2e-6)
    # the formula at a corner pixel (0, 0) of the 72x48 image: fx = fy = 72, centre (36, 24)
    ones = torch.ones(1, *SIZE, dtype=torch.float64)
    K = scene.intrinsics(4)
    corner = distance_to_planar(ones, K)[0, 0, 0]
    assert corner == pytest.approx(1 / math.sqrt(1 + ((0.5 - 36) / 72) ** 2 + ((0.5 - 24) / 72) ** 2))
    # GCD's linear-angle approximation: exact at the borders' angle ends, within 0.5% elsewhere
    approx = distance_to_planar(ones, K, "gcd")
    assert approx[0, 0, 0] == pytest.approx(1 / math.sqrt(1 + 0.5**2 + (1 / 3) ** 2))
    assert (approx / distance_to_planar(ones, K) - 1).abs().max() < 5e-3
    assert not torch.allclose(approx, distance_to_planar(ones, K))
    gcd = scene.read_depth(4, [0], conversion="gcd")
    assert torch.allclose(gcd, distance_to_planar(scene.read_distance(4, [0]), K.float(), "gcd"))


def test_rgb_and_segmentation_ids(root, truth) -> None:
    scene = load_scene(root, 2900)
    gen, out = truth
    rgb = scene.read_rgb(7, [0, 3])
    assert rgb.shape == (2, 3, *SIZE) and rgb.dtype == torch.float32
    expected = (out[7]["rgb"][[0, 3]] * 255).round() / 255
    assert torch.allclose(rgb, expected, atol=1e-6)
    assert rgb.min() > 0.02  # nothing pure black (GCD treats black as holes)
    seg = scene.read_segmentation(7)
    assert seg.dtype == torch.int64 and seg.shape == (FRAMES, 1, *SIZE)
    assert torch.equal(seg[:, 0], out[7]["segmentation"])
    ids = set(torch.cat([scene.read_segmentation(v).unique() for v in range(16)]).tolist())
    assert ids == {0} | {o.instance_id for o in gen.objects}
    assert [i["segmentation_id"] for i in scene.metadata[7]["instances"]] == [
        o.instance_id for o in gen.objects
    ]


def test_write_kubric_mini_resumes(tmp_path) -> None:
    ids = write_kubric_mini(tmp_path, num_scenes=2, num_frames=2, size=(16, 24), supersample=1, previews=True)
    assert ids == ["scn02900", "scn02901"]
    assert (tmp_path / "scn02901" / "scn02901_p0_v15_rgb.mp4").stat().st_size > 0
    stamp = (tmp_path / "scn02900" / "scn02900_p0_v0.json").stat().st_mtime_ns
    shutil.rmtree(tmp_path / "scn02901")
    assert write_kubric_mini(tmp_path, num_scenes=2, num_frames=2, size=(16, 24), supersample=1) == ids
    assert (tmp_path / "scn02900" / "scn02900_p0_v0.json").stat().st_mtime_ns == stamp  # kept
    assert load_scene(tmp_path, "scn02901").num_frames == 2
    a = load_scene(tmp_path, 2900).read_rgb(4, 0)
    b = load_scene(tmp_path, 2901).read_rgb(4, 0)
    assert not torch.equal(a, b)  # seeds differ per scene
    with pytest.raises(RecaptureError, match="already exists"):
        write_synthetic_scene(tmp_path, 2900, num_frames=2, size=(16, 24))


@pytest.fixture
def small(tmp_path) -> Path:
    write_synthetic_scene(tmp_path, 7, num_frames=2, size=(16, 24), seed=1, supersample=1)
    return tmp_path


def test_missing_files_and_fields_are_clear_errors(small) -> None:
    scene_dir = small / "scn00007"
    with pytest.raises(RecaptureError, match="scn00008.*does not exist"):
        load_scene(small, "scn00008")
    with pytest.raises(RecaptureError, match="not a Kubric-4D scene id"):
        load_scene(small, "scene7")
    scene = load_scene(small, 7)
    with pytest.raises(RecaptureError, match=r"frame 2 is out of range.*num_frames=2"):
        scene.read_rgb(4, 2)
    (scene_dir / "frames_p0_v4" / "depth_00001.tiff").unlink()
    with pytest.raises(RecaptureError, match=r"depth_00001\.tiff does not exist.*float32 TIFF"):
        scene.read_depth(4, [0, 1])
    (scene_dir / "frames_p0_v9" / "segmentation_00000.png").unlink()
    with pytest.raises(RecaptureError, match="segmentation_00000.png does not exist"):
        scene.read_segmentation(9, 0)
    meta_path = scene_dir / "scn00007_p0_v3.json"
    meta = json.loads(meta_path.read_text())
    del meta["camera"]["quaternions"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RecaptureError, match=r"scn00007_p0_v3\.json: field 'camera\.quaternions' is missing"):
        load_scene(small, 7)
    assert load_scene(small, 7, views=[4]).views == (4,)  # other views still load
    meta_path.unlink()
    with pytest.raises(RecaptureError, match=r"view metadata .*scn00007_p0_v3\.json does not exist"):
        load_scene(small, 7)
    meta = json.loads((scene_dir / "scn00007_p0_v5.json").read_text())
    meta["camera"]["positions"] = meta["camera"]["positions"][:1]
    (scene_dir / "scn00007_p0_v5.json").write_text(json.dumps(meta))
    with pytest.raises(RecaptureError, match=r"camera\.positions.*shape \(1, 3\).*\(2, 3\)"):
        load_scene(small, 7, views=[5])
