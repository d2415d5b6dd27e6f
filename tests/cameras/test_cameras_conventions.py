"""Conventions: OpenCV <-> OpenGL, c2w <-> w2c, intrinsics, look-at, spherical poses, rotation algebra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp

from recapture.cameras import (
    c2w_to_w2c,
    fov_from_intrinsics,
    interpolate_poses,
    intrinsics_from_fov,
    look_at,
    opencv_to_opengl,
    opengl_to_opencv,
    spherical_to_c2w,
    w2c_to_c2w,
)
from recapture.cameras.poses import make_pose, matrix_to_quaternion, quaternion_to_matrix, rotation_angle
from recapture.utils import RecaptureError

H, W = 256, 384
K = intrinsics_from_fov(60.0, H, W)


def random_c2w(n: int, seed: int = 0) -> torch.Tensor:
    rot = torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix())
    trans = torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3)))
    return make_pose(rot, trans)


def project_opencv(c2w: torch.Tensor, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = (c2w_to_w2c(c2w) @ torch.cat([point, point.new_ones(1)]))[:3]
    return (K.double() @ (p / p[2]))[:2], p[2]


def project_opengl(c2w_gl: torch.Tensor, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenGL pinhole: the camera looks down -z, image v grows downwards while camera y points up."""
    p = torch.linalg.inv(c2w_gl) @ torch.cat([point, point.new_ones(1)])
    depth = -p[2]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    return torch.stack([cx + fx * p[0] / depth, cy - fy * p[1] / depth]), depth


@pytest.mark.parametrize("seed", range(5))
def test_point_in_front_projects_inside_the_image_in_every_convention(seed: int) -> None:
    c2w = random_c2w(1, seed)[0]
    rng = np.random.default_rng(seed)
    local = torch.tensor([rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2), rng.uniform(1.0, 3.0)], dtype=torch.float64)
    point = (c2w @ torch.cat([local, torch.ones(1, dtype=torch.float64)]))[:3]
    uv_cv, z_cv = project_opencv(c2w, point)
    uv_gl, z_gl = project_opengl(opencv_to_opengl(c2w), point)
    assert z_cv > 0 and z_gl > 0
    assert 0 <= uv_cv[0] < W and 0 <= uv_cv[1] < H
    torch.testing.assert_close(uv_cv, uv_gl)
    # w2c round trip (the extrinsic matrix of COLMAP and friends)
    torch.testing.assert_close(w2c_to_c2w(c2w_to_w2c(c2w)), c2w)
    uv_w2c = K.double() @ (c2w_to_w2c(c2w)[:3, :3] @ point + c2w_to_w2c(c2w)[:3, 3])
    torch.testing.assert_close(uv_w2c[:2] / uv_w2c[2], uv_cv)


def test_opengl_conversion_is_an_involution_and_keeps_the_centre() -> None:
    c2w = random_c2w(4)
    gl = opencv_to_opengl(c2w)
    torch.testing.assert_close(opengl_to_opencv(gl), c2w)
    torch.testing.assert_close(gl[:, :3, 3], c2w[:, :3, 3])
    torch.testing.assert_close(gl[:, :3, 2], -c2w[:, :3, 2])  # OpenGL z points backwards
    torch.testing.assert_close(c2w_to_w2c(c2w), torch.linalg.inv(c2w))


def test_intrinsics_from_fov_analytic_and_inverse() -> None:
    k = intrinsics_from_fov(90.0, H, W)
    assert float(k[0, 0]) == pytest.approx(W / 2) and float(k[1, 1]) == pytest.approx(W / 2)
    assert (float(k[0, 2]), float(k[1, 2])) == (W / 2, H / 2)
    assert float(intrinsics_from_fov(90.0, H, W, axis="vertical")[1, 1]) == pytest.approx(H / 2)
    # Kubric-4D: 0.9273 rad horizontal at 576 px wide -> fx = 576 (benchmarks spec 1.3)
    assert float(intrinsics_from_fov(math.degrees(0.9273), 384, 576)[0, 0]) == pytest.approx(576.0, rel=1e-3)
    for axis in ("horizontal", "vertical", "diagonal"):
        k = intrinsics_from_fov(47.0, H, W, axis=axis)
        assert fov_from_intrinsics(k, H, W, axis=axis) == pytest.approx(47.0)


@pytest.mark.parametrize("fov", [0.0, 180.0, -5.0, float("nan")])
def test_intrinsics_from_fov_rejects_bad_fov(fov: float) -> None:
    with pytest.raises(RecaptureError, match="fov_deg"):
        intrinsics_from_fov(fov, H, W)


def test_look_at_points_at_the_target_upright() -> None:
    eye, target = torch.tensor([1.0, -0.5, -2.0]), torch.tensor([0.2, 0.1, 1.5])
    c2w = look_at(eye, target)
    rot = c2w[:3, :3]
    torch.testing.assert_close(rot.T @ rot, torch.eye(3), atol=1e-6, rtol=0)
    assert float(torch.linalg.det(rot)) == pytest.approx(1.0, abs=1e-6)
    fwd = (target - eye) / (target - eye).norm()
    torch.testing.assert_close(rot[:, 2], fwd)
    assert float(rot[1, 0]) == pytest.approx(0.0, abs=1e-6)  # no roll: the right axis stays horizontal
    assert float(rot[:, 1] @ torch.tensor([0.0, -1.0, 0.0])) < 0  # image "down" is opposite to up
    with pytest.raises(RecaptureError, match="parallel"):
        look_at([0.0, 0.0, 0.0], [0.0, -2.0, 0.0])
    with pytest.raises(RecaptureError, match="coincide"):
        look_at([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])


def test_spherical_matches_the_gcd_formula() -> None:
    """Kubric view 4 (az 15, el 5, r 15 around (0, 0, 1)), built as in benchmarks spec 1.5."""
    c2w = spherical_to_c2w(15.0, 5.0, 15.0, target=(0.0, 0.0, 1.0)).double()
    az, el = math.radians(15), math.radians(5)
    pos = torch.tensor([15 * math.cos(el) * math.cos(az), 15 * math.cos(el) * math.sin(az), 15 * math.sin(el) + 1])
    fwd = torch.tensor([0.0, 0.0, 1.0]) - pos
    fwd = fwd / fwd.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 0.0, -1.0]), fwd)
    right = right / right.norm()
    down = torch.linalg.cross(fwd, right)
    torch.testing.assert_close(c2w[:3, 3], pos.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(c2w[:3, :3], torch.stack([right, down, fwd], dim=1).double(), atol=1e-6, rtol=0)
    batch = spherical_to_c2w(torch.tensor([0.0, 90.0, 180.0]), 30.0, 2.0)
    assert batch.shape == (3, 4, 4)
    torch.testing.assert_close(batch[:, :3, 3].norm(dim=-1), torch.full((3,), 2.0))


def test_quaternions_match_scipy() -> None:
    rots = Rotation.random(64, random_state=1)
    near_pi = Rotation.from_rotvec([[math.pi - 1e-4, 0, 0], [0, math.pi, 0], [0.0, 0.0, 0.0]])
    mats = torch.from_numpy(np.concatenate([rots.as_matrix(), near_pi.as_matrix()]))
    q = matrix_to_quaternion(mats)
    q_ref = torch.from_numpy(Rotation.from_matrix(mats.numpy()).as_quat(scalar_first=True))
    q_ref = torch.where(q_ref[:, :1] < 0, -q_ref, q_ref)
    same = torch.minimum((q - q_ref).abs().amax(1), (q + q_ref).abs().amax(1))
    assert float(same.max()) < 1e-6
    torch.testing.assert_close(quaternion_to_matrix(q), mats)


def test_interpolate_poses_is_slerp_plus_linear_translation() -> None:
    a, b = random_c2w(2, seed=3)
    t = torch.linspace(0, 1, 7)
    out = interpolate_poses(a, b, t)
    torch.testing.assert_close(out[0], a)
    torch.testing.assert_close(out[-1], b, atol=1e-6, rtol=0)
    ref = Slerp([0, 1], Rotation.from_matrix(torch.stack([a[:3, :3], b[:3, :3]]).numpy()))(t.numpy()).as_matrix()
    torch.testing.assert_close(out[:, :3, :3], torch.from_numpy(ref), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :3, 3], a[:3, 3] + t[:, None].double() * (b[:3, 3] - a[:3, 3]))
    half = rotation_angle(out[3, :3, :3].T @ a[:3, :3])
    assert float(half) == pytest.approx(float(rotation_angle(b[:3, :3].T @ a[:3, :3])) / 2, abs=1e-6)
    with pytest.raises(RecaptureError, match="single"):
        interpolate_poses(random_c2w(2), b, t)


def test_look_at_and_interpolation_are_differentiable() -> None:
    eye = torch.tensor([0.3, -0.2, -1.0], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.1, 0.2, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, t: look_at(e, t), (eye, target))
    b = random_c2w(1, seed=5)[0].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: interpolate_poses(torch.eye(4, dtype=torch.float64), p, [0.3]), (b,))
    assert look_at(eye.float(), target.float()).dtype == torch.float32
