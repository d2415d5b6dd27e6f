"""Presets move the camera the documented way; easing, modes, composition, keyframes, specs."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from recapture.cameras import (
    PRESETS,
    MoveSpec,
    Trajectory,
    TrajectorySpec,
    c2w_to_w2c,
    compose,
    from_keyframes,
    intrinsics_from_fov,
    make_trajectory,
)
from recapture.cameras.formats import validate_c2w
from recapture.cameras.poses import make_pose, rotation_y
from recapture.cameras.trajectory import progress
from recapture.utils import RecaptureError

T = 9
K = intrinsics_from_fov(60.0, 256, 384)
IDENTITY = torch.eye(4)


def project(c2w: torch.Tensor, k: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Pixel (u, v) of a point given in source-camera coordinates."""
    p = (c2w_to_w2c(c2w) @ torch.cat([point, point.new_ones(1)]))[:3]
    assert p[2] > 0, "the point must be in front of the camera"
    return (k @ (p / p[2]))[:2]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("mode", ["gradual", "direct"])
def test_every_preset_is_valid_and_starts_at_the_source(preset: str, mode: str) -> None:
    amount = {"zoom": 0.5, "dolly_zoom": 0.3}.get(preset, 0.2 if preset in ("truck", "pedestal", "dolly") else 20.0)
    traj = make_trajectory(preset, amount, T, mode=mode)
    assert traj.c2w.shape == (T, 4, 4) and traj.c2w.dtype == torch.float32
    validate_c2w(traj.c2w)
    if mode == "gradual":
        torch.testing.assert_close(traj.c2w[0], IDENTITY)
        assert traj.focal_scale is None or float(traj.focal_scale[0]) == pytest.approx(1.0)
    else:
        torch.testing.assert_close(traj.c2w, traj.c2w[-1:].expand(T, 4, 4))
    direct = make_trajectory(preset, amount, T, mode="direct")
    torch.testing.assert_close(traj.c2w[-1], direct.c2w[0], atol=1e-6, rtol=0)


def test_pan_turns_right_about_a_fixed_centre() -> None:
    c2w = make_trajectory("pan", 30.0, T).c2w
    torch.testing.assert_close(c2w[:, :3, 3], torch.zeros(T, 3))
    assert float(c2w[-1, 0, 2]) == pytest.approx(math.sin(math.radians(30)), abs=1e-6)  # forward gains +x
    # a point straight ahead now appears left of the image centre
    assert float(project(c2w[-1], K, torch.tensor([0.0, 0.0, 5.0]))[0]) < float(K[0, 2])


def test_tilt_looks_up() -> None:
    c2w = make_trajectory("tilt", 15.0, T).c2w
    torch.testing.assert_close(c2w[:, :3, 3], torch.zeros(T, 3))
    assert float(c2w[-1, 1, 2]) == pytest.approx(-math.sin(math.radians(15)), abs=1e-6)  # forward gains -y (up)
    assert float(project(c2w[-1], K, torch.tensor([0.0, 0.0, 5.0]))[1]) > float(K[1, 2])  # scene moves down


def test_roll_turns_the_picture_clockwise() -> None:
    """Positive roll: a point right of the image centre moves down on screen (image y points down),
    i.e. the scene turns clockwise by the roll angle; the camera's right axis tilts up (-y)."""
    c2w = make_trajectory("roll", 30.0, T).c2w
    torch.testing.assert_close(c2w[:, :3, 3], torch.zeros(T, 3))
    assert float(c2w[-1, 1, 0]) == pytest.approx(-math.sin(math.radians(30)), abs=1e-6)
    for point in (torch.tensor([1.0, 0.0, 5.0]), torch.tensor([0.0, -1.0, 5.0])):  # right of / above centre
        u0, v0 = project(c2w[0], K, point).tolist()
        u, v = project(c2w[-1], K, point).tolist()
        before = math.atan2(v0 - float(K[1, 2]), u0 - float(K[0, 2]))  # screen angle, clockwise positive
        after = math.atan2(v - float(K[1, 2]), u - float(K[0, 2]))
        assert math.degrees(after - before) == pytest.approx(30.0, abs=1e-3)
    u, v = project(c2w[-1], K, torch.tensor([1.0, 0.0, 5.0])).tolist()
    assert u > float(K[0, 2]) and v > float(K[1, 2])


@pytest.mark.parametrize(("preset", "axis", "sign"), [("truck", 0, 1.0), ("pedestal", 1, -1.0), ("dolly", 2, 1.0)])
def test_translations_move_along_their_axis(preset: str, axis: int, sign: float) -> None:
    c2w = make_trajectory(preset, 0.25, T).c2w
    expected = torch.zeros(3)
    expected[axis] = sign * 0.25
    torch.testing.assert_close(c2w[-1, :3, 3], expected)
    torch.testing.assert_close(c2w[:, :3, :3], torch.eye(3).expand(T, 3, 3))
    assert bool((c2w[1:, axis, 3] * sign >= c2w[:-1, axis, 3] * sign).all())  # monotone


def test_zoom_scales_the_focal_length_about_the_principal_point() -> None:
    traj = make_trajectory("zoom", 0.5, T)
    torch.testing.assert_close(traj.c2w, IDENTITY.expand(T, 4, 4))
    ks = traj.intrinsics_for(K)
    assert float(ks[-1, 0, 0]) == pytest.approx(1.5 * float(K[0, 0]))
    assert float(ks[-1, 1, 1]) == pytest.approx(1.5 * float(K[1, 1]))
    torch.testing.assert_close(ks[:, :2, 2], K[:2, 2].expand(T, 2))
    assert float(make_trajectory("zoom", -0.5, T).focal_scale[-1]) == pytest.approx(0.5)
    with pytest.raises(RecaptureError, match="> -1"):
        make_trajectory("zoom", -1.0, T)


@pytest.mark.parametrize(("preset", "sign_axis"), [("orbit", (0, 1.0)), ("arc", (1, -1.0))])
def test_orbit_and_arc_keep_the_distance_to_the_pivot_and_look_at_it(preset: str, sign_axis: tuple) -> None:
    depth = 2.5
    traj = make_trajectory(preset, 40.0, T, pivot_depth=depth)
    pivot = torch.tensor([0.0, 0.0, depth])
    torch.testing.assert_close(traj.pivot, pivot)
    dist = (traj.c2w[:, :3, 3] - pivot).norm(dim=-1)
    torch.testing.assert_close(dist, torch.full((T,), depth))
    for c2w in traj.c2w:
        torch.testing.assert_close(project(c2w, K, pivot), K[:2, 2], atol=1e-3, rtol=0)  # pivot stays centred
    axis, sign = sign_axis
    assert float(traj.c2w[-1, axis, 3]) * sign > 0
    other = 1 - axis  # orbit stays in the horizontal plane, arc in the vertical one
    torch.testing.assert_close(traj.c2w[:, other, 3], torch.zeros(T), atol=1e-6, rtol=0)


def test_dolly_zoom_keeps_the_subject_plane_the_same_size() -> None:
    depth = 2.0
    traj = make_trajectory("dolly_zoom", 0.8, T, pivot_depth=depth)
    assert float(traj.c2w[-1, 2, 3]) == pytest.approx(0.8)
    ks = traj.intrinsics_for(K)
    left, right = torch.tensor([-0.3, 0.0, depth]), torch.tensor([0.3, 0.0, depth])
    widths = torch.stack([project(c, k, right)[0] - project(c, k, left)[0] for c, k in zip(traj.c2w, ks, strict=True)])
    torch.testing.assert_close(widths, widths[:1].expand(T), atol=1e-3, rtol=0)
    # ...while the background (farther away) grows smaller: that is the vertigo effect
    far_l, far_r = torch.tensor([-1.0, 0.0, 6.0]), torch.tensor([1.0, 0.0, 6.0])
    assert float(project(traj.c2w[-1], ks[-1], far_r)[0] - project(traj.c2w[-1], ks[-1], far_l)[0]) < float(
        project(traj.c2w[0], ks[0], far_r)[0] - project(traj.c2w[0], ks[0], far_l)[0]
    )
    with pytest.raises(RecaptureError, match="pivot_depth"):
        make_trajectory("dolly_zoom", 2.0, T, pivot_depth=depth)


def test_easing_and_modes() -> None:
    lin, smooth = progress(T, "gradual", "linear"), progress(T, "gradual", "ease_in_out")
    torch.testing.assert_close(lin, torch.linspace(0, 1, T, dtype=torch.float64))
    assert float(smooth[0]) == 0.0 and float(smooth[-1]) == pytest.approx(1.0)
    assert float(smooth[1]) < float(lin[1]) and float(smooth[-2]) > float(lin[-2])  # slow start and end
    torch.testing.assert_close(smooth + smooth.flip(0), torch.ones(T, dtype=torch.float64))  # symmetric
    torch.testing.assert_close(progress(T, "direct"), torch.ones(T, dtype=torch.float64))
    assert progress(1, "gradual").tolist() == [1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "spin"}, "unknown trajectory preset 'spin'"),
        ({"amount": float("nan")}, "finite"),
        ({"num_frames": 0}, "num_frames"),
        ({"mode": "sudden"}, "mode"),
        ({"easing": "bounce"}, "easing"),
        ({"pivot_depth": 0.0}, "pivot_depth"),
        ({"amount": "wide"}, r"trajectory amount \(orbit\) must be a number, got 'wide'"),
        ({"pivot_depth": "near"}, "pivot_depth must be a number, got 'near'"),
    ],
)
def test_bad_preset_arguments_raise_clear_errors(kwargs: dict, match: str) -> None:
    args = {"preset": "orbit", "amount": 10.0, "num_frames": T, **kwargs}
    with pytest.raises(RecaptureError, match=match):
        make_trajectory(**args)


def test_compose_orbit_then_dolly_moves_towards_the_pivot() -> None:
    traj = compose(make_trajectory("orbit", 30.0, T), make_trajectory("dolly", 0.25, T))
    pivot = torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close((traj.c2w[-1, :3, 3] - pivot).norm(), torch.tensor(0.75))
    torch.testing.assert_close(project(traj.c2w[-1], K, pivot), K[:2, 2], atol=1e-3, rtol=0)
    torch.testing.assert_close(traj.pivot, pivot)
    zoomed = compose(make_trajectory("zoom", 0.5, T), make_trajectory("zoom", 1.0, T))
    assert float(zoomed.focal_scale[-1]) == pytest.approx(3.0)
    with pytest.raises(RecaptureError, match="equal length"):
        compose(make_trajectory("pan", 5.0, T), make_trajectory("pan", 5.0, T + 1))
    with pytest.raises(RecaptureError, match="at least one"):
        compose()


def test_keyframes_hit_their_poses_and_slerp_between() -> None:
    keys = torch.stack([IDENTITY, make_pose(rotation_y(torch.tensor(math.radians(40.0))), torch.tensor([1.0, 0, 0]))])
    traj = from_keyframes([0.0, 1.0], keys, 5)
    torch.testing.assert_close(traj.c2w[0], IDENTITY)
    torch.testing.assert_close(traj.c2w[-1], keys[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(traj.c2w[2], make_trajectory("pan", 20.0, 5, mode="direct").c2w[0]
                               + torch.tensor([[0, 0, 0, 0.5], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0.0]]),
                               atol=1e-6, rtol=0)
    three = from_keyframes([0.0, 0.5, 1.0], torch.stack([IDENTITY, keys[1], IDENTITY]), 5, focal_scales=[1, 2, 1])
    torch.testing.assert_close(three.c2w[2], keys[1], atol=1e-6, rtol=0)
    assert three.focal_scale.tolist() == pytest.approx([1.0, 1.5, 2.0, 1.5, 1.0])
    with pytest.raises(RecaptureError, match="increasing"):
        from_keyframes([0.5, 0.2], keys, 5)
    with pytest.raises(RecaptureError, match=r"\[0, 1\]"):
        from_keyframes([0, 13], keys, 14)


def test_resample_and_scale(caplog: pytest.LogCaptureFixture) -> None:
    traj = make_trajectory("orbit", 30.0, 14, easing="linear")
    with caplog.at_level(logging.WARNING, logger="recapture.cameras.trajectory"):
        short = traj.resample(7)
    assert short.num_frames == 7 and "resampling" in caplog.text
    torch.testing.assert_close(short.c2w[[0, -1]], traj.c2w[[0, -1]], atol=1e-6, rtol=0)
    assert traj.resample(14) is traj
    same = make_trajectory("orbit", 30.0, 27, easing="linear").resample(14)  # 27 -> 14 keeps every other pose
    torch.testing.assert_close(same.c2w, traj.c2w, atol=1e-5, rtol=0)
    scaled = traj.scaled(3.0)
    torch.testing.assert_close(scaled.c2w[:, :3, 3], 3 * traj.c2w[:, :3, 3])
    torch.testing.assert_close(scaled.c2w[:, :3, :3], traj.c2w[:, :3, :3])
    torch.testing.assert_close(scaled.pivot, torch.tensor([0.0, 0.0, 3.0]))
    with pytest.raises(RecaptureError, match="scene_scale"):
        traj.scaled(0.0)
    with pytest.raises(RecaptureError, match=r"\(T, 4, 4\)"):
        Trajectory(c2w=torch.eye(4))
    with pytest.raises(RecaptureError, match="focal_scale"):
        Trajectory(c2w=torch.eye(4)[None], focal_scale=torch.tensor([0.0]))
    with pytest.raises(RecaptureError, match="K must be"):
        traj.intrinsics_for(torch.eye(4))


def test_trajectory_spec_builds_presets_moves_and_files(tmp_path) -> None:
    torch.testing.assert_close(TrajectorySpec(preset="pan", amount=10.0).build(T).c2w,
                               make_trajectory("pan", 10.0, T).c2w)
    spec = TrajectorySpec(moves=[MoveSpec("orbit", 20.0), MoveSpec("dolly", 0.1, easing="linear")])
    ref = compose(make_trajectory("orbit", 20.0, T), make_trajectory("dolly", 0.1, T, easing="linear"))
    torch.testing.assert_close(spec.build(T).c2w, ref.c2w)
    torch.testing.assert_close(TrajectorySpec(moves=[{"preset": "orbit", "amount": 20.0}]).build(T).c2w,
                               make_trajectory("orbit", 20.0, T).c2w)
    from recapture.cameras import save_trajectory

    path = save_trajectory(make_trajectory("arc", 10.0, 5), tmp_path / "t.json")
    assert TrajectorySpec(file=str(path)).build(T).num_frames == T
    with pytest.raises(RecaptureError, match="only one"):
        TrajectorySpec(file=str(path), moves=[MoveSpec("pan", 1.0)]).build(T)
    with pytest.raises(RecaptureError, match="needs a `preset`"):
        TrajectorySpec(preset=None).build(T)


def test_trajectory_spec_parses_from_yaml() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--trajectory", type=TrajectorySpec, default=TrajectorySpec())
    cfg = parser.parse_string(
        "trajectory:\n  preset: null\n  mode: direct\n  moves:\n"
        "    - {preset: orbit, amount: 15}\n    - {preset: zoom, amount: 0.2, mode: gradual}\n"
    )
    spec = parser.instantiate_classes(cfg).trajectory
    assert isinstance(spec, TrajectorySpec) and isinstance(spec.moves[0], MoveSpec)
    traj = spec.build(T)
    torch.testing.assert_close(traj.c2w[0], make_trajectory("orbit", 15.0, 1, mode="direct").c2w[0])
    assert float(traj.focal_scale[0]) == pytest.approx(1.0) and float(traj.focal_scale[-1]) == pytest.approx(1.2)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"focal_scale": "1.0"}, "Trajectory.focal_scale must be a list of 2 numbers (one focal multiplier per pose), "
                                 "got '1.0'"),
        ({"focal_scale": [1.0]}, "Trajectory.focal_scale must be a list of 2 numbers"),
        ({"pivot": [0.0, 1.0]}, "Trajectory.pivot must be 3 numbers [x, y, z] (the look-at point in source-camera "
                                "coordinates), got [0.0, 1.0]"),
        ({"pivot": ["a", "b", "c"]}, "Trajectory.pivot must be 3 numbers [x, y, z]"),
        ({"pivot": [0.0, float("inf"), 1.0]}, "Trajectory.pivot must be finite"),
        ({"intrinsics": [[500, 0, 32], [0, 500]]}, "Trajectory.intrinsics must be a (3, 3) or (T, 3, 3) array of "
                                                   "numbers, got a ragged list"),
        ({"c2w": [[["1"] * 4] * 4]}, "Trajectory.c2w must be a (T, 4, 4) array of numbers, got"),
        ({"name": 5}, "Trajectory.name must be a string, got 5"),
    ],
)
def test_trajectory_rejects_malformed_fields(kwargs: dict, needle: str) -> None:
    args = {"c2w": IDENTITY.repeat(2, 1, 1), **kwargs}
    with pytest.raises(RecaptureError) as err:
        Trajectory(**args)
    assert needle in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: TrajectorySpec(amount="wide"), "TrajectorySpec.amount must be a number, got 'wide'"),
        (lambda: TrajectorySpec(amount=True), "TrajectorySpec.amount must be a number, got True"),
        (lambda: TrajectorySpec(amount=float("nan")), "TrajectorySpec.amount must be finite, got nan"),
        (lambda: TrajectorySpec(pivot_depth="near"), "TrajectorySpec.pivot_depth must be a number, got 'near'"),
        (lambda: TrajectorySpec(pivot_depth=-1.0), "TrajectorySpec.pivot_depth must be > 0 scene units"),
        (lambda: TrajectorySpec(preset="spin"), "TrajectorySpec.preset must be one of pan, tilt"),
        (lambda: TrajectorySpec(mode="sudden"), "TrajectorySpec.mode must be one of gradual, direct, got 'sudden'"),
        (lambda: TrajectorySpec(file_format="blender"), "TrajectorySpec.file_format must be one of auto, recapture"),
        (lambda: TrajectorySpec(moves=[{"preset": "orbit", "amount": "x"}]),
         "TrajectorySpec.moves[0]: MoveSpec.amount must be a number, got 'x'"),
        (lambda: TrajectorySpec(moves=[{"preset": "orbit"}]), "TrajectorySpec.moves[0] = {'preset': 'orbit'} needs"),
        (lambda: TrajectorySpec(moves=[MoveSpec("pan", 1.0), {"preset": "pan", "amount": 1, "angle": 2}]),
         "TrajectorySpec.moves[1] = {'preset': 'pan', 'amount': 1, 'angle': 2} needs the keys preset and amount "
         "(optional: mode, easing, pivot_depth); unknown: angle."),
        (lambda: TrajectorySpec(moves=["orbit"]), "TrajectorySpec.moves[0] must be a MoveSpec or a dict, got str"),
        (lambda: MoveSpec("spin", 1.0), "MoveSpec.preset must be one of pan"),
        (lambda: MoveSpec("pan", 1.0, pivot_depth="far"), "MoveSpec.pivot_depth must be a number, got 'far'"),
    ],
)
def test_trajectory_spec_checks_its_values_when_built(build, needle: str) -> None:
    with pytest.raises(RecaptureError) as err:
        build()
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_trajectory_spec_accepts_numeric_strings_and_paths(tmp_path) -> None:
    spec = TrajectorySpec(amount="20", pivot_depth=2)  # e.g. YAML 1.1 reads 1e-1 as a string
    assert spec.amount == 20.0 and spec.pivot_depth == 2.0
    assert TrajectorySpec(moves=[{"preset": "dolly", "amount": "0.1"}]).moves[0].amount == 0.1
    assert TrajectorySpec(file=tmp_path / "t.json").file == str(tmp_path / "t.json")
