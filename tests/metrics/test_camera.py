"""Camera accuracy on analytic trajectories, and the COLMAP / JSON / NPY readers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recapture.metrics import CameraAccuracy, camera_errors, read_colmap_images, read_poses
from recapture.metrics.camera import quaternion_to_rotation
from recapture.utils import RecaptureError


def _rot_z(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)


def _rot_x(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)


def _poses(rotations: list[torch.Tensor], positions: list[list[float]]) -> torch.Tensor:
    out = torch.eye(4, dtype=torch.float64).repeat(len(rotations), 1, 1)
    for i, (r, p) in enumerate(zip(rotations, positions, strict=True)):
        out[i, :3, :3] = r
        out[i, :3, 3] = torch.tensor(p, dtype=torch.float64)
    return out


def _random_trajectory(n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    rots = [_rot_z(float(a)) @ _rot_x(float(b)) for a, b in torch.rand(n, 2, generator=g)]
    return _poses(rots, torch.randn(n, 3, generator=g).tolist())


def test_identical_trajectories_give_zero() -> None:
    traj = _random_trajectory()
    errs = camera_errors(traj, traj)
    assert errs == pytest.approx({"rot_err": 0.0, "trans_err": 0.0, "cammc": 0.0}, abs=1e-6)


def test_invariant_to_world_frame_and_scale() -> None:
    traj = _random_trajectory()
    world = torch.eye(4, dtype=torch.float64)
    world[:3, :3] = _rot_x(0.7) @ _rot_z(-1.2)
    world[:3, 3] = torch.tensor([3.0, -1.0, 2.0])
    scaled = world @ _scale_translation(traj, 4.0)  # another world frame and the estimator's own units
    assert camera_errors(scaled, traj) == pytest.approx({"rot_err": 0, "trans_err": 0, "cammc": 0}, abs=1e-6)


def _scale_translation(c2w: torch.Tensor, s: float) -> torch.Tensor:
    out = c2w.clone()
    out[:, :3, 3] *= s
    return out


def test_known_rotation_and_translation_errors() -> None:
    eye = torch.eye(3, dtype=torch.float64)
    gt = _poses([eye, eye, eye], [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    gen = _poses([eye, _rot_z(0.1), _rot_x(0.25)], [[0, 0, 0], [1, 0, 0], [3, 0, 0]])
    errs = camera_errors(gen, gt)
    assert errs["rot_err"] == pytest.approx(0.35, abs=1e-9)
    # translations normalised by their largest distance: gt [0, .5, 1], gen [0, 1/3, 1]
    assert errs["trans_err"] == pytest.approx(0.5 - 1 / 3, abs=1e-9)
    r1 = (_rot_z(0.1) - eye).norm() ** 2
    r2 = (_rot_x(0.25) - eye).norm() ** 2
    cammc = math.sqrt(r1 + (1 / 6) ** 2) + math.sqrt(r2)
    assert errs["cammc"] == pytest.approx(cammc, abs=1e-9)
    # 3x4 input, and the Metric class's mean over videos
    metric = CameraAccuracy()
    metric.update(gen[:, :3], gt[:, :3])
    metric.update(gt, gt)
    assert metric.compute()["rot_err"].item() == pytest.approx(0.35 / 2)
    with pytest.raises(RecaptureError, match="same frames"):
        camera_errors(gen[:2], gt)


def _quat_from_matrix(r: np.ndarray) -> np.ndarray:
    w = math.sqrt(max(0.0, 1 + np.trace(r))) / 2
    return np.array(
        [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
    )


def test_quaternion_convention_wxyz() -> None:
    q = torch.tensor([math.cos(0.15), 0, 0, math.sin(0.15)], dtype=torch.float64)  # 0.3 rad about z
    assert torch.allclose(quaternion_to_rotation(q), _rot_z(0.3), atol=1e-12)


def test_readers_round_trip(tmp_path: Path) -> None:
    traj = _random_trajectory(4)
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
    ]
    order = [2, 0, 3, 1]  # COLMAP ids need not follow frame order: frames are sorted by name
    for image_id, i in enumerate(order, start=1):
        w2c = torch.linalg.inv(traj[i]).numpy()
        q, t = _quat_from_matrix(w2c[:3, :3]), w2c[:3, 3]
        lines.append(
            f"{image_id} {' '.join(map(repr, q.tolist()))} {' '.join(map(repr, t.tolist()))} 1 frame_{i:03d}.png"
        )
        lines.append("" if i % 2 else "10.0 20.0 -1 11.5 3.0 7")
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse" / "0" / "images.txt").write_text("\n".join(lines) + "\n")
    names, c2w = read_colmap_images(tmp_path / "sparse" / "0" / "images.txt")
    assert names == [f"frame_{i:03d}.png" for i in range(4)]
    assert torch.allclose(c2w, traj, atol=1e-9)
    assert torch.allclose(read_poses(tmp_path), traj, atol=1e-9)

    np.save(tmp_path / "poses.npy", traj[:, :3].numpy())
    assert torch.allclose(read_poses(tmp_path / "poses.npy"), traj)
    (tmp_path / "poses.json").write_text(json.dumps({"c2w": traj.tolist()}))
    assert torch.allclose(read_poses(tmp_path / "poses.json"), traj)
    (tmp_path / "list.json").write_text(json.dumps(traj.tolist()))
    assert torch.allclose(read_poses(tmp_path / "list.json"), traj)
    (tmp_path / "bad.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(RecaptureError, match="'c2w'"):
        read_poses(tmp_path / "bad.json")
    with pytest.raises(RecaptureError, match="does not exist"):
        read_poses(tmp_path / "missing.npy")


def test_other_formats_through_cameras_package(tmp_path: Path) -> None:
    pytest.importorskip("recapture.cameras.formats")
    traj = _random_trajectory(4)
    opengl = traj.clone()
    opengl[:, :3, 1:3] *= -1  # OpenCV -> OpenGL camera axes (nerfstudio)
    frames = [
        {"file_path": f"images/{i:03d}.png", "transform_matrix": m.tolist()} for i, m in enumerate(opengl)
    ]
    meta = {"fl_x": 100.0, "fl_y": 100.0, "cx": 32.0, "cy": 24.0, "w": 64, "h": 48, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    errs = camera_errors(read_poses(tmp_path / "transforms.json"), traj)
    # that package stores float32: arccos near 1 turns 1e-7 into ~5e-4 rad
    assert errs == pytest.approx({"rot_err": 0.0, "trans_err": 0.0, "cammc": 0.0}, abs=2e-3)
    assert errs["trans_err"] < 1e-5
