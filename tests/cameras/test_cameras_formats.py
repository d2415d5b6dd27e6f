"""Trajectory files: round trips of every format, foreign conventions, validation errors."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from scipy.interpolate import UnivariateSpline

from recapture.cameras import (
    FORMATS,
    compose,
    intrinsics_from_fov,
    load_trajectory,
    make_trajectory,
    save_trajectory,
)
from recapture.cameras.formats import detect_format, validate_c2w
from recapture.cameras.poses import make_pose, rotation_x, rotation_y
from recapture.utils import RecaptureError

T = 6
K = intrinsics_from_fov(55.0, 256, 384)
NAMES = {"recapture": "t.json", "nerfstudio": "transforms.json", "colmap": "colmap", "recammaster":
         "camera_extrinsics.json", "trajectorycrafter": "tc.txt", "cognvs": "cognvs.txt"}


def general_trajectory():
    """Rotation about every axis, translation, zoom: representable by the pose formats."""
    return compose(make_trajectory("orbit", 25.0, T), make_trajectory("roll", 10.0, T),
                   make_trajectory("pedestal", 0.1, T), make_trajectory("zoom", 0.3, T))


def spherical_trajectory():
    """dolly . arc . orbit: what theta/phi/r files can express."""
    return compose(make_trajectory("dolly", -0.2, T), make_trajectory("arc", 12.0, T),
                   make_trajectory("orbit", -30.0, T))


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_of_every_format(tmp_path, fmt: str) -> None:
    traj = spherical_trajectory() if fmt in ("trajectorycrafter", "cognvs") else general_trajectory()
    path = save_trajectory(traj, tmp_path / NAMES[fmt], format=fmt, K=K)
    assert path.exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    back = load_trajectory(path, format=fmt)
    torch.testing.assert_close(back.c2w, traj.c2w, atol=2e-6, rtol=0)
    if fmt in ("nerfstudio", "colmap"):  # absolute intrinsics, zoom included
        torch.testing.assert_close(back.intrinsics, traj.intrinsics_for(K))
    elif fmt == "recapture":
        torch.testing.assert_close(back.focal_scale, traj.focal_scale)
        assert back.intrinsics is None and back.name == traj.name
    if fmt not in ("trajectorycrafter", "cognvs"):  # three-line text files are ambiguous on purpose
        assert detect_format(path) == fmt


def test_recapture_file_layout_and_intrinsics(tmp_path) -> None:
    traj = make_trajectory("pan", 10.0, 3)
    traj.intrinsics = K.expand(3, 3, 3).clone()
    path = save_trajectory(traj, tmp_path / "t.json")
    obj = json.loads(path.read_text())
    assert obj["format"] == "recapture.trajectory/v1" and obj["convention"] == "opencv"
    assert np.array(obj["c2w"]).shape == (3, 4, 4) and np.array(obj["intrinsics"]).shape == (3, 3)
    back = load_trajectory(path, num_frames=3)
    torch.testing.assert_close(back.intrinsics, traj.intrinsics)
    obj["convention"] = "opengl"
    obj["c2w"] = (torch.tensor(obj["c2w"]) * torch.tensor([1.0, -1, -1, 1])).tolist()
    (tmp_path / "gl.json").write_text(json.dumps(obj))
    torch.testing.assert_close(load_trajectory(tmp_path / "gl.json").c2w, traj.c2w)


def test_absolute_formats_are_made_relative_to_the_first_camera(tmp_path) -> None:
    world = make_pose(rotation_x(torch.tensor(0.3)) @ rotation_y(torch.tensor(-1.1)), torch.tensor([2.0, -1.0, 5.0]))
    traj = general_trajectory()
    absolute = type(traj)(c2w=world @ traj.c2w, name="abs")
    for fmt in ("nerfstudio", "colmap"):
        path = save_trajectory(absolute, tmp_path / NAMES[fmt], format=fmt, K=K)
        torch.testing.assert_close(load_trajectory(path).c2w, traj.c2w, atol=1e-5, rtol=0)
        torch.testing.assert_close(load_trajectory(path, relative=False).c2w, absolute.c2w, atol=1e-5, rtol=0)


def test_resampling_when_the_count_differs(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    path = save_trajectory(make_trajectory("orbit", 20.0, 27, easing="linear"), tmp_path / "t.json")
    with caplog.at_level(logging.WARNING):
        traj = load_trajectory(path, num_frames=14)
    assert traj.num_frames == 14 and "resampling" in caplog.text
    torch.testing.assert_close(traj.c2w, make_trajectory("orbit", 20.0, 14, easing="linear").c2w, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ TrajectoryCrafter / CogNVS
def test_spherical_text_matches_the_presets(tmp_path) -> None:
    depth = 1.7
    (tmp_path / "theta.txt").write_text("0 10\n0 0\n0 0\n")
    (tmp_path / "phi.txt").write_text("0 0\n0 25\n0 0.2\n")
    arc = make_trajectory("arc", 10.0, T, easing="linear", pivot_depth=depth)
    got = load_trajectory(tmp_path / "theta.txt", format="trajectorycrafter", num_frames=T, pivot_depth=depth)
    torch.testing.assert_close(got.c2w, arc.c2w, atol=1e-6, rtol=0)  # +theta moves the camera up
    # CogNVS puts phi first: the same file is an orbit to the right for it
    got = load_trajectory(tmp_path / "theta.txt", format="cognvs", num_frames=T, pivot_depth=depth)
    torch.testing.assert_close(got.c2w, make_trajectory("orbit", 10.0, T, easing="linear", pivot_depth=depth).c2w,
                               atol=1e-6, rtol=0)
    got = load_trajectory(tmp_path / "phi.txt", format="trajectorycrafter", num_frames=T, pivot_depth=depth)
    ref = compose(make_trajectory("dolly", 0.2 * depth, T, easing="linear"),
                  make_trajectory("orbit", 25.0, T, easing="linear", pivot_depth=depth))
    torch.testing.assert_close(got.c2w, ref.c2w, atol=1e-6, rtol=0)  # +r moves forward by r * radius


def test_trajectorycrafter_target_pose_line(tmp_path) -> None:
    (tmp_path / "target.txt").write_text("10 20 0.1 0.05 0.02\n")
    assert detect_format(tmp_path / "target.txt") == "trajectorycrafter"
    got = load_trajectory(tmp_path / "target.txt", num_frames=T, pivot_depth=2.0)
    lin = {"easing": "linear"}
    ref = compose(make_trajectory("truck", 0.05, T, **lin), make_trajectory("pedestal", 0.02, T, **lin),
                  make_trajectory("dolly", 0.2, T, **lin), make_trajectory("arc", 10.0, T, pivot_depth=2.0, **lin),
                  make_trajectory("orbit", 20.0, T, pivot_depth=2.0, **lin))
    torch.testing.assert_close(got.c2w, ref.c2w, atol=1e-6, rtol=0)


def test_spherical_keyframes_use_the_upstream_spline(tmp_path) -> None:
    phi = [0, 3, 10, 20, 30, 25, 17, 10, 0]
    (tmp_path / "traj4.txt").write_text(" ".join(map(str, phi)) + "\n0 0\n0 0\n")
    got = load_trajectory(tmp_path / "traj4.txt", format="cognvs", num_frames=25)
    ref = UnivariateSpline(np.linspace(0, 1, len(phi)), phi, k=3)(np.linspace(0, 1, 25))
    ref[0], ref[-1] = phi[0], phi[-1]
    fwd = got.c2w[:, :3, 2].double()
    yaw = -torch.rad2deg(torch.atan2(fwd[:, 0], fwd[:, 2]))  # orbit right turns the camera left
    torch.testing.assert_close(yaw, torch.from_numpy(ref), atol=1e-4, rtol=0)


def test_spherical_text_errors(tmp_path) -> None:
    (tmp_path / "three.txt").write_text("0 1\n0 2\n0 0\n")
    with pytest.raises(RecaptureError, match="'trajectorycrafter' or 'cognvs'"):
        load_trajectory(tmp_path / "three.txt")
    (tmp_path / "two.txt").write_text("0 1\n0 2\n")
    with pytest.raises(RecaptureError, match="expected 3"):
        load_trajectory(tmp_path / "two.txt", format="cognvs")
    with pytest.raises(RecaptureError, match="roll"):
        save_trajectory(make_trajectory("roll", 5.0, T), tmp_path / "r.txt", format="cognvs")
    assert not (tmp_path / "r.txt").exists() and not list(tmp_path.glob(".r.*"))


# ------------------------------------------------------------------ ReCamMaster (Unreal Engine)
def unreal_string(forward, right, up, position_cm) -> str:
    rows = [list(forward) + [0], list(right) + [0], list(up) + [0], list(position_cm) + [1]]
    return " ".join("[" + " ".join(f"{v:.9g}" for v in r) + "]" for r in rows)


def unreal_project(forward, right, up, pos, point, f: float, cx: float, cy: float) -> tuple[float, float]:
    """Pinhole projection done in Unreal terms: depth along forward, u along right, v against up."""
    d = np.asarray(point, float) - np.asarray(pos, float)
    x, y, z = d @ np.asarray(forward, float), d @ np.asarray(right, float), d @ np.asarray(up, float)
    return cx + f * y / x, cy - f * z / x


def test_recammaster_unreal_conversion(tmp_path) -> None:
    yaw = math.radians(30)  # Unreal yaw +30: from +x (forward) towards +y (right), i.e. turn right
    frames = [
        ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0)),
        ((1, 0, 0), (0, 1, 0), (0, 0, 1), (100, 0, 0)),  # 1 m forward
        ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 100, 0)),  # 1 m right
        ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 100)),  # 1 m up
        ((math.cos(yaw), math.sin(yaw), 0), (-math.sin(yaw), math.cos(yaw), 0), (0, 0, 1), (0, 0, 0)),
    ]
    obj = {f"frame{i}": {"cam01": unreal_string(*fr), "cam02": unreal_string(*frames[0])} for i, fr in enumerate(frames)}
    path = tmp_path / "camera_extrinsics.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(RecaptureError, match="cam01"):
        load_trajectory(path)  # two cameras: the user must choose
    traj = load_trajectory(path, camera="cam01")
    torch.testing.assert_close(traj.c2w[1, :3, 3], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(traj.c2w[2, :3, 3], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(traj.c2w[3, :3, 3], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(traj.c2w[4], make_trajectory("pan", 30.0, 1, mode="direct").c2w[0], atol=1e-6, rtol=0)
    # a point seen by the yawed Unreal camera lands on the same pixel with our converted pose
    f, cx, cy = float(K[0, 0]), float(K[0, 2]), float(K[1, 2])
    point_ue = (300.0, 40.0, -25.0)
    u, v = unreal_project(*frames[4][:3], frames[4][3], point_ue, f, cx, cy)
    absolute = load_trajectory(path, camera="cam01", relative=False).c2w[4].double()
    p_world = torch.tensor([point_ue[0], -point_ue[1], point_ue[2]], dtype=torch.float64) / 100  # y flip, metres
    p_cam = absolute[:3, :3].T @ (p_world - absolute[:3, 3])
    uv = K.double() @ (p_cam / p_cam[2])
    assert (float(uv[0]), float(uv[1])) == pytest.approx((u, v), abs=1e-3)  # poses are stored float32


def test_recammaster_writer_puts_the_source_camera_at_the_unreal_identity(tmp_path) -> None:
    path = save_trajectory(make_trajectory("truck", 0.5, 3), tmp_path / "cams.json", format="recammaster")
    obj = json.loads(path.read_text())
    assert obj["frame0"]["cam01"] == "[1 0 0 0] [0 1 0 0] [0 0 1 0] [0 0 0 1]"
    assert obj["frame2"]["cam01"].endswith("[0 50 0 1]")  # 0.5 scene units right = +y in Unreal, in cm


# ------------------------------------------------------------------ COLMAP and nerfstudio details
def test_colmap_text_parsing(tmp_path) -> None:
    q0, q1 = [1, 0, 0, 0], [math.cos(0.25), 0, math.sin(0.25), 0]  # second camera rotated 0.5 rad about y
    (tmp_path / "cameras.txt").write_text(
        "# comment\n1 SIMPLE_RADIAL 384 256 300 192 128 0.01\n2 PINHOLE 384 256 310 320 190 130\n"
    )
    (tmp_path / "images.txt").write_text(
        "# Image list\n"
        f"7 {' '.join(map(str, q1))} 0.5 0 0 2 frame_10.png\n\n"  # empty 2D-point line
        f"3 {' '.join(map(str, q0))} 0 0 0 1 frame_2.png\n100 200 -1 150 120 5\n"
    )
    traj = load_trajectory(tmp_path, relative=False)
    torch.testing.assert_close(traj.c2w[0], torch.eye(4))  # frame_2 sorts before frame_10
    w2c = make_pose(rotation_y(torch.tensor(0.5)), torch.tensor([0.5, 0.0, 0.0]))
    torch.testing.assert_close(traj.c2w[1], torch.linalg.inv(w2c), atol=1e-6, rtol=0)
    torch.testing.assert_close(traj.intrinsics[0], torch.tensor([[300.0, 0, 192], [0, 300, 128], [0, 0, 1]]))
    torch.testing.assert_close(traj.intrinsics[1], torch.tensor([[310.0, 0, 190], [0, 320, 130], [0, 0, 1]]))
    (tmp_path / "images.txt").unlink()
    (tmp_path / "images.bin").write_bytes(b"\0")
    with pytest.raises(RecaptureError, match="model_converter"):
        load_trajectory(tmp_path, format="colmap")


def test_nerf_synthetic_camera_angle(tmp_path) -> None:
    gl = torch.eye(4)
    obj = {"camera_angle_x": 0.6911, "w": 800, "h": 800,
           "frames": [{"file_path": "r_0", "transform_matrix": gl.tolist()}]}
    (tmp_path / "transforms.json").write_text(json.dumps(obj))
    traj = load_trajectory(tmp_path)
    assert float(traj.intrinsics[0, 0, 0]) == pytest.approx(400 / math.tan(0.6911 / 2), rel=1e-5)
    torch.testing.assert_close(load_trajectory(tmp_path, relative=False).c2w[0],
                               torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])))


# ------------------------------------------------------------------ validation
def _write(tmp_path, c2w) -> object:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "recapture.trajectory/v1", "c2w": c2w}))
    return path


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda m: m.__setitem__((1, 0, 3), float("nan")), "pose 1 contains NaN"),
        (lambda m: m.__setitem__((2, slice(0, 3), slice(0, 3)), 2 * torch.eye(3)), "pose 2 is not orthonormal"),
        (lambda m: m.__setitem__((0, 0, 0), -1.0), "pose 0 has determinant"),
        (lambda m: m.__setitem__((1, 3, 0), 0.5), "bottom row"),
    ],
)
def test_invalid_poses_raise_clear_errors(tmp_path, mutate, match: str) -> None:
    c2w = torch.eye(4).repeat(3, 1, 1)
    mutate(c2w)
    with pytest.raises(RecaptureError, match=match):
        validate_c2w(c2w, "poses")
    path = _write(tmp_path, c2w.tolist())
    with pytest.raises(RecaptureError, match=f"bad.json: .*{match}"):
        load_trajectory(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"format": "recapture.trajectory/v1"}, "missing the required key 'c2w'"),
        ({"format": "recapture.trajectory/v9", "c2w": []}, "unsupported version"),
        ({"format": "recapture.trajectory/v1", "c2w": [[1, 2]]}, "T x 4 x 4"),
        ({"format": "recapture.trajectory/v1", "c2w": [torch.eye(4).tolist()], "convention": "unreal"}, "convention"),
        ({"something": 1}, "unrecognised JSON"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, content: dict, match: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(content))
    with pytest.raises(RecaptureError, match=match):
        load_trajectory(path)


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(RecaptureError, match="does not exist"):
        load_trajectory(tmp_path / "missing.json")
    with pytest.raises(RecaptureError, match="unknown trajectory format 'blender'"):
        load_trajectory(tmp_path / "missing.json", format="blender")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(RecaptureError, match="not valid JSON"):
        load_trajectory(tmp_path / "x.json")
    with pytest.raises(RecaptureError, match="need intrinsics"):
        save_trajectory(make_trajectory("pan", 5.0, 3), tmp_path / "c", format="colmap")


BINARY = bytes(range(128, 256)) * 4  # not UTF-8 from the first byte


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("t.json", "auto"),
        ("t.txt", "auto"),
        ("t.txt", "cognvs"),
        ("t.json", "recapture"),
        ("transforms.json", "nerfstudio"),
        ("camera_extrinsics.json", "recammaster"),
        ("images.txt", "auto"),  # a COLMAP model
    ],
)
def test_binary_files_raise_one_line_errors(tmp_path, name: str, fmt: str) -> None:
    path = tmp_path / name
    path.write_bytes(BINARY)
    with pytest.raises(RecaptureError) as err:
        load_trajectory(path, format=fmt)
    message = str(err.value)
    assert f"{path} is not UTF-8 text (byte 0x80 at offset 0)" in message, message
    assert "pass the trajectory file itself" in message and "\n" not in message


def _recapture_file(tmp_path, **fields) -> object:
    path = tmp_path / "x.json"
    eye = torch.eye(4).tolist()
    path.write_text(json.dumps({"format": "recapture.trajectory/v1", "c2w": [eye, eye, eye], **fields}))
    return path


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"intrinsics": [[500, 0, 32], [0, 500]]},
         "'intrinsics' must be a 3 x 3 or T x 3 x 3 list of numbers, got a ragged list [[500, 0, 32], [0, 500]]"),
        ({"intrinsics": [["500", 0, 32], [0, 500, 24], [0, 0, 1]]},
         "'intrinsics' must be a 3 x 3 or T x 3 x 3 list of numbers, got [['500', 0, 32]"),
        ({"intrinsics": [[500, 0, 32], [0, 500, 24]]}, "'intrinsics': expected (3, 3) or (3, 3, 3) intrinsics, got (2, 3)"),
        ({"focal_scale": "1.5"}, "'focal_scale' must be a list of 3 numbers (one focal multiplier per pose), got '1.5'"),
        ({"focal_scale": [1.0, None, 1.2]}, "'focal_scale' must be a list of 3 numbers"),
        ({"focal_scale": [1.0, 1.1]}, "'focal_scale' must be a list of 3 numbers (one focal multiplier per pose), "
                                      "got shape (2,)"),
        ({"focal_scale": [1.0, 0.0, 1.2]}, "'focal_scale' must be finite and > 0"),
        ({"pivot": [0, 1]}, "'pivot' must be 3 numbers [x, y, z] (the look-at point in source-camera coordinates), "
                            "got [0.0, 1.0]"),
        ({"pivot": ["0", "0", "1"]}, "'pivot' must be 3 numbers [x, y, z]"),
        ({"name": 5}, "'name' must be a string or null, got 5"),
        ({"c2w": [[["1", 0, 0, 0]] * 4]}, "'c2w' must be a T x 4 x 4 list of numbers, got"),
    ],
)
def test_malformed_fields_name_the_file_key_and_value(tmp_path, fields: dict, needle: str) -> None:
    path = _recapture_file(tmp_path, **fields)
    with pytest.raises(RecaptureError) as err:
        load_trajectory(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and needle in message, message
    assert "\n" not in message


def test_valid_optional_fields_still_load(tmp_path) -> None:
    k = [[500.0, 0.0, 32.0], [0.0, 500.0, 24.0], [0.0, 0.0, 1.0]]
    traj = load_trajectory(_recapture_file(tmp_path, intrinsics=k, focal_scale=[1, 1.5, 2], pivot=[0, 0, 2],
                                           name="mine"))
    torch.testing.assert_close(traj.intrinsics, torch.tensor(k).expand(3, 3, 3))
    torch.testing.assert_close(traj.focal_scale, torch.tensor([1.0, 1.5, 2.0]))
    torch.testing.assert_close(traj.pivot, torch.tensor([0.0, 0.0, 2.0]))
    assert traj.name == "mine"


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("transforms.json", {"frames": [{"transform_matrix": [[1, 0, 0, 0], [0, 1, 0]]}]},
         "frames[0].transform_matrix must be a 4 x 4 list of numbers, got a ragged list"),
        ("transforms.json", {"fl_x": "wide", "w": 64, "h": 48, "frames": [{"transform_matrix": np.eye(4).tolist()}]},
         "frames[0] 'fl_x' must be a number, got 'wide'"),
        ("camera_extrinsics.json", {"frame0": {"cam01": "[1 0 0 0] [0 one 0 0] [0 0 1 0] [0 0 0 1]"}},
         "frame0/cam01: expected numbers, got '0 one 0 0'"),
        ("camera_extrinsics.json", {"frame0": {"cam01": 7}}, "frame0/cam01: expected a string"),
    ],
)
def test_foreign_files_with_non_numbers_name_the_entry(tmp_path, name: str, content: dict, needle: str) -> None:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    with pytest.raises(RecaptureError) as err:
        load_trajectory(path)
    assert str(path) in str(err.value) and needle in str(err.value), str(err.value)


def test_colmap_lines_with_non_numbers_name_the_line(tmp_path) -> None:
    (tmp_path / "images.txt").write_text("1 1 0 0 zero 0 0 0 1 frame_0.png\n\n")
    with pytest.raises(RecaptureError, match=r"images.txt image 1: expected numbers, got '1 0 0 zero'"):
        load_trajectory(tmp_path)
