"""Kubric-4D controls (official JSON, fallback sampler, trajectories) and GCD's splat / blur primitives."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from recapture.data.kubric import (
    SceneControls,
    blur_into_black,
    controls_for_scene,
    gaussian_blur,
    gcd_soft_splat,
    parse_controls,
    read_controls,
    sample_fallback_controls,
    spherical_pose,
    spherical_trajectories,
)
from recapture.utils import RecaptureError

OFFICIAL = {
    "scn02900": {
        "sample_00": {
            "spherical_start": [15.0, 5.0, 15.0],
            "spherical_end": [75.0, 20.0, 13.0],
            "frame_start": 3,
            "frame_skip": 2,
            "extra": "ignored",
        },
        "sample_01": {
            "spherical_start": [15, 5, 15],
            "spherical_end": [-40, 0, 18],
            "frame_start": 0,
            "frame_skip": 4,
        },
    },
    "scn02901": {
        "sample_00": {
            "spherical_start": [15.0, 5.0, 15.0],
            "spherical_end": [15.0, 35.0, 15.0],
            "frame_start": 6.0,
            "frame_skip": 3,
        }
    },
}


def test_read_official_controls(tmp_path) -> None:
    path = tmp_path / "kubric_valtest_controls_gradual.json"
    path.write_text(json.dumps(OFFICIAL))
    controls = read_controls(path)
    assert sorted(controls) == ["scn02900", "scn02901"]
    c = controls_for_scene(controls, "scn02900", 0)
    assert c == SceneControls((15.0, 5.0, 15.0), (75.0, 20.0, 13.0), 3, 2)
    assert c.frame_indices() == [3 + 2 * i for i in range(14)]
    assert controls_for_scene(controls, "scn02900", "sample_01").frame_skip == 4
    assert controls_for_scene(controls, "scn02901").frame_start == 6
    # fps = round(24 / frame_skip): 24 / 12 / 8 / 6
    assert [SceneControls((0, 0, 1), (0, 0, 1), 0, k).fps() for k in (1, 2, 3, 4)] == [24, 12, 8, 6]
    assert parse_controls({"a": {"s": c.to_dict()}})["a"]["s"] == c


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"spherical_end": [1, 2, 3], "frame_start": 0, "frame_skip": 1}, "spherical_start"),
        (
            {"spherical_start": [1, 2, 3], "spherical_end": [1, 2, 3], "frame_start": 0, "frame_skip": 0},
            "frame_skip",
        ),
        (
            {"spherical_start": [1, 2], "spherical_end": [1, 2, 3], "frame_start": 0, "frame_skip": 1},
            "3 finite",
        ),
        (
            {"spherical_start": [1, 2, -3], "spherical_end": [1, 2, 3], "frame_start": 0, "frame_skip": 1},
            "radius",
        ),
        (
            {"spherical_start": [1, 2, 3], "spherical_end": [1, 2, 3], "frame_start": 1.5, "frame_skip": 1},
            "frame_start",
        ),
    ],
)
def test_controls_errors_name_the_field(entry, message) -> None:
    with pytest.raises(RecaptureError, match=message) as err:
        parse_controls({"scn00001": {"sample_00": entry}}, "c.json")
    assert "scn00001" in str(err.value) and "sample_00" in str(err.value)


def test_controls_lookup_errors(tmp_path) -> None:
    controls = parse_controls(OFFICIAL)
    with pytest.raises(RecaptureError, match="not in the controls file"):
        controls_for_scene(controls, "scn00042")
    with pytest.raises(RecaptureError, match="sample_05"):
        controls_for_scene(controls, "scn02901", 5)
    with pytest.raises(RecaptureError, match="does not exist"):
        read_controls(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(RecaptureError, match="not valid JSON"):
        read_controls(tmp_path / "bad.json")


def test_fallback_sampler_is_deterministic_per_scene_and_seed() -> None:
    a = sample_fallback_controls("scn02900", seed=0)
    assert a == sample_fallback_controls("scn02900", seed=0)
    assert a != sample_fallback_controls("scn02900", seed=1)
    assert a != sample_fallback_controls("scn02901", seed=0)


def test_fallback_sampler_ranges() -> None:
    draws = [sample_fallback_controls(f"scn{i:05d}", seed=7) for i in range(600)]
    skips = np.array([d.frame_skip for d in draws])
    starts = np.array([d.frame_start for d in draws])
    end = np.array([d.spherical_end for d in draws])
    assert set(skips) == {1, 2, 3, 4}  # U{1 .. 60 // 14}
    for k in (1, 2, 3, 4):  # frame_start ~ U{0 .. min(6, 60 - (13k + 1) - 1)}
        assert set(starts[skips == k]) == set(range(min(6, 60 - (13 * k + 1) - 1) + 1))
    assert all(d.frame_indices()[-1] <= 59 for d in draws)
    assert all(d.spherical_start == (15.0, 5.0, 15.0) for d in draws)  # view 4
    d_az = end[:, 0] - 15.0
    assert d_az.min() >= -90 and d_az.max() <= 90 and d_az.min() < -80 and d_az.max() > 80
    assert end[:, 1].min() >= 0.0 and end[:, 1].max() <= 35.0  # 5 + [-30, 30] within [0, 50]
    assert end[:, 1].min() < 2 and end[:, 1].max() > 33
    assert (
        end[:, 2].min() >= 12.0
        and end[:, 2].max() <= 18.0
        and end[:, 2].min() < 12.3
        and end[:, 2].max() > 17.7
    )
    # short synthetic scenes: only skip 1 fits, start in 0 .. 16 - 14 - 1
    short = [sample_fallback_controls(f"scn{i:05d}", num_available_frames=16) for i in range(50)]
    assert {d.frame_skip for d in short} == {1} and {d.frame_start for d in short} == {0, 1}
    with pytest.raises(RecaptureError, match="needs num_frames=14"):
        sample_fallback_controls("scn00000", num_available_frames=10)


def test_spherical_trajectories_gradual_and_direct() -> None:
    c = SceneControls((15.0, 5.0, 15.0), (80.0, 31.0, 12.4), 0, 1)
    src, dst = spherical_trajectories(c, "gradual")
    assert src.shape == dst.shape == (14, 3)
    assert torch.equal(src, torch.tensor([[15.0, 5.0, 15.0]], dtype=torch.float64).expand(14, 3))
    expected = torch.tensor([15.0, 5.0, 15.0], dtype=torch.float64) + torch.arange(14)[
        :, None
    ] / 13 * torch.tensor([65.0, 26.0, -2.6], dtype=torch.float64)
    assert torch.allclose(dst, expected, atol=1e-12)
    _, direct = spherical_trajectories(c, "direct")
    assert torch.equal(direct, torch.tensor([c.spherical_end], dtype=torch.float64).expand(14, 3))
    with pytest.raises(RecaptureError, match="gradual"):
        spherical_trajectories(c, "jumpy")  # type: ignore[arg-type]


def test_spherical_pose_is_gcd_look_at() -> None:
    az, el, r = 37.0, 21.0, 13.0
    pose = spherical_pose(az, el, r).double()
    a, e = math.radians(az), math.radians(el)
    pos = torch.tensor([r * math.cos(e) * math.cos(a), r * math.cos(e) * math.sin(a), r * math.sin(e) + 1.0])
    forward = torch.tensor([0.0, 0.0, 1.0]) - pos
    forward = forward / forward.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 0.0, -1.0]), forward)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    assert torch.allclose(pose[:3, 3], pos.double(), atol=1e-5)
    assert torch.allclose(pose[:3, :3], torch.stack([right, down, forward], -1).double(), atol=1e-6)


def test_gaussian_blur_matches_scipy_reflect_reference() -> None:
    img = torch.rand(2, 13, 17, dtype=torch.float64)
    k, sigma = 7, 1.3
    x = np.linspace(-3, 3, 7)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    ref = ndimage.correlate1d(
        ndimage.correlate1d(img.numpy(), w, axis=1, mode="mirror"), w, axis=2, mode="mirror"
    )
    assert np.allclose(gaussian_blur(img, k, sigma).numpy(), ref, atol=1e-12)


def test_blur_into_black_fills_holes_only_from_valid_pixels() -> None:
    colour = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)
    img = colour[:, None, None].expand(3, 40, 40).clone()
    img[:, 10:25, 12:30] = 0.0  # a hole: filled with the (constant) valid colour
    out = blur_into_black(img, 21)
    assert torch.allclose(out, colour[:, None, None].expand_as(out), atol=1e-9)
    assert torch.equal(blur_into_black(torch.zeros(3, 30, 30), 21), torch.zeros(3, 30, 30))
    ramp = torch.linspace(0.1, 1, 40, dtype=torch.float64).expand(3, 40, 40).clone()
    ramp[:, 5:8, 5:8] = 0  # the final 3x3 blur leaves a linear ramp unchanged away from borders
    assert torch.allclose(blur_into_black(ramp, 3)[:, 20:30, 20:30], ramp[:, 20:30, 20:30], atol=1e-9)


def _camera() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.eye(4, dtype=torch.float64), torch.tensor([[10.0, 0, 4.0], [0, 10.0, 3.0], [0, 0, 1]])


def test_soft_splat_weights_and_neighbours() -> None:
    c2w, K = _camera()
    # two points through the centre of pixel (5, 2) at z = 2 and z = 3, one at pixel (0, 0) at z = 1
    z = torch.tensor([2.0, 3.0, 1.0], dtype=torch.float64)
    u = torch.tensor([5.5, 5.5, 0.5], dtype=torch.float64)
    v = torch.tensor([2.5, 2.5, 0.5], dtype=torch.float64)
    pts = torch.stack([(u - 4.0) / 10 * z, (v - 3.0) / 10 * z, z], -1)
    col = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    img, weight = gcd_soft_splat(pts, col, c2w, K, (6, 8), return_depth=True)
    w = torch.exp(-512 * (2 * z / 3.0 - 1))  # z_max = 3
    mix = (w[0] * col[0] + w[1] * col[1]) / (w[0] + w[1])
    assert torch.allclose(img[:3, 2, 5], mix) and torch.allclose(weight[0, 2, 5], w[0] + w[1])
    assert torch.allclose(img[3, 2, 5], (w[0] * 2 + w[1] * 3) / (w[0] + w[1]))
    for dy, dx in ((0, 1), (1, 0), (1, 1)):  # +x, +y, +x+y neighbours: same mean, 0.02 of the weight
        assert torch.allclose(img[:3, 2 + dy, 5 + dx], mix)
        assert torch.allclose(weight[0, 2 + dy, 5 + dx], 0.02 * (w[0] + w[1]))
    assert torch.equal(img[:3, 2, 4], torch.zeros(3)) and torch.equal(img[:3, 1, 5], torch.zeros(3))
    assert torch.allclose(img[:3, 0, 0], col[2])
    assert int((weight > 0).sum()) == 8  # 2 pixels x 4 footprint cells


def test_soft_splat_drops_near_points_and_grid_conventions() -> None:
    c2w, K = _camera()
    col = torch.ones(1, 3, dtype=torch.float64)
    near = torch.tensor([[0.0, 0.0, 0.05]], dtype=torch.float64)
    assert gcd_soft_splat(near, col, c2w, K, (6, 8))[1].sum() == 0
    # u = -0.3: outside with pixel centres at +0.5; GCD's int(u + 0.5) truncates it into pixel 0
    pt = torch.tensor([[(-0.3 - 4.0) / 10, (1.2 - 3.0) / 10, 1.0]], dtype=torch.float64)
    assert gcd_soft_splat(pt, col, c2w, K, (6, 8), pixel_grid="centre")[1].sum() == 0
    _, w = gcd_soft_splat(pt, col, c2w, K, (6, 8), pixel_grid="gcd")
    assert w[0, 1, 0] > 0  # v = 1.2 -> int(1.7) = 1
    # the same point at u = 3.7: centre grid floor -> 3, GCD grid int(4.2) -> 4
    pt = torch.tensor([[(3.7 - 4.0) / 10, (1.2 - 3.0) / 10, 1.0]], dtype=torch.float64)
    assert gcd_soft_splat(pt, col, c2w, K, (6, 8))[1][0, 1, 3] > 0
    assert gcd_soft_splat(pt, col, c2w, K, (6, 8), pixel_grid="gcd")[1][0, 1, 4] > 0


def test_soft_splat_far_scene_branch() -> None:
    c2w, K = _camera()
    z = torch.tensor([16.0, 100.0], dtype=torch.float64)  # z_max >= 64: sqrt(z) clamped to 32, strength 256
    pts = torch.stack([torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), z], -1)
    col = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    img, _ = gcd_soft_splat(pts, col, c2w, K, (6, 8))
    zn = z.sqrt()
    w = torch.exp(-256 * (2 * zn / zn.max() - 1))
    assert torch.allclose(img[:3, 3, 4], (w[0] * col[0] + w[1] * col[1]) / w.sum())
