"""build_anchor / write_anchor_outputs: scaling, report, preflight warning, cache hit/miss/atomicity."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import pytest
import torch

from recapture.anchor import AnchorConfig, build_anchor, preflight_message, write_anchor_outputs
from recapture.anchor import cache as anchor_cache
from recapture.cameras import intrinsics_from_fov, make_trajectory
from recapture.depth import TensorDepth
from recapture.io import watchable_fps
from recapture.utils import RecaptureError

T, H, W = 4, 64, 96


class CountingDepth(TensorDepth):
    """Exact depth that counts how often it was asked."""

    def __init__(self, depth: torch.Tensor) -> None:
        super().__init__(depth, name="exact:test")
        self.calls = 0

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().__call__(frames)


@pytest.fixture
def clip() -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.rand(T, 3, H, W)
    depth = torch.full((T, 1, H, W), 4.0)
    return frames, depth


def test_report_scaling_and_intrinsics(clip, tmp_path: Path) -> None:
    frames, depth = clip
    traj = make_trajectory("truck", 0.25, T)
    cfg = AnchorConfig(cache_dir=None, progress=False)
    res = build_anchor(frames, 24.0, CountingDepth(depth), traj, cfg)
    rep = res.report
    assert res.scene_scale == 4.0 and rep["scene_scale"] == 4.0
    # translations scaled to depth units; the trajectory itself stays in scene units
    torch.testing.assert_close(res.c2w[:, :3, 3], traj.c2w[:, :3, 3] * 4.0)
    assert res.trajectory is traj
    K = intrinsics_from_fov(60.0, H, W)
    torch.testing.assert_close(res.K, K.expand(T, 3, 3))
    # a plane at depth 4 moved 1 depth unit right at the end shifts by f / 4 pixels
    shift = K[0, 0].item() * 1.0 / 4.0
    assert rep["coverage"][-1] == pytest.approx(1 - round(shift) / W, abs=1 / W)
    assert rep["coverage"][0] == 1.0
    assert rep["coverage_min"] == min(rep["coverage"]) and rep["coverage_mean"] == pytest.approx(
        sum(rep["coverage"]) / T
    )
    for key in (
        "num_frames",
        "height",
        "width",
        "depth_source",
        "depth_is_prior",
        "mode",
        "timings",
        "cache_key",
    ):
        assert key in rep
    assert (rep["num_frames"], rep["height"], rep["width"]) == (T, H, W)
    assert rep["depth_source"] == "exact:test" and rep["depth_is_prior"] is False and rep["cache"] == "off"
    assert rep["preflight_warning"] is None
    json.dumps(rep)  # JSON-able


def test_trajectory_length_mismatch(clip) -> None:
    frames, depth = clip
    with pytest.raises(RecaptureError, match="the trajectory has 7 poses but the video has 4 frames"):
        build_anchor(
            frames, 24.0, TensorDepth(depth), make_trajectory("pan", 5.0, 7), AnchorConfig(cache_dir=None)
        )


def test_preflight_warning_for_low_coverage(clip, caplog) -> None:
    frames, depth = clip
    traj = make_trajectory("orbit", 60.0, T, mode="direct")
    with (
        caplog.at_level(logging.WARNING),
        pytest.warns(UserWarning, match=r"reveals \d+% unseen pixels in frame \d+") as rec,
    ):
        res = build_anchor(
            frames, 24.0, TensorDepth(depth), traj, AnchorConfig(cache_dir=None, progress=False)
        )
    msg = str(rec[0].message)
    rep = res.report
    worst = rep["coverage_min_frame"]
    assert rep["coverage"][worst] == pytest.approx(rep["coverage_min"], abs=1e-6)
    unseen = round(100 * (1 - rep["coverage_min"]))
    assert msg.startswith(f"this orbit reveals {unseen}% unseen pixels in frame {worst} ")
    assert "the result will be mostly hallucinated there; try a smaller angle" in msg
    assert f"mean coverage {rep['coverage_mean']:.1%}" in msg and "\n" not in msg
    assert rep["preflight_warning"] == msg
    assert any("preflight" in r.getMessage() for r in caplog.records)


def _truck_to_half_coverage() -> tuple[torch.Tensor, torch.Tensor, object]:
    """A wall at depth 4 and a gradual truck whose last frame sees half of it (mean 75%)."""
    frames, depth = torch.rand(T, 3, H, W), torch.full((T, 1, H, W), 4.0)
    fx = float(intrinsics_from_fov(60.0, H, W)[0, 0])
    # ease_in_out progress over 4 frames is 0, 1/4, 3/4, 1: coverage 1, 7/8, 5/8, 1/2
    return frames, depth, make_trajectory("truck", (W / 2) / fx, T)


def test_preflight_fires_on_the_worst_frame_not_the_mean(tmp_path: Path) -> None:
    frames, depth, traj = _truck_to_half_coverage()
    relaxed = AnchorConfig(cache_dir=str(tmp_path / "cache"), min_coverage=0.45, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all while every frame is above 45%
        first = build_anchor(frames, 24.0, TensorDepth(depth), traj, relaxed)
    rep = first.report
    assert rep["coverage"] == pytest.approx([1.0, 0.875, 0.625, 0.5], abs=2 / W)
    assert rep["coverage_mean"] >= 0.6 > rep["coverage_min"]  # the old mean-based check stayed silent
    assert rep["preflight_warning"] is None and rep["coverage_min_frame"] == T - 1
    # the default 60% threshold warns, on a cache hit too (the warning is not cached)
    strict = AnchorConfig(cache_dir=relaxed.cache_dir, progress=False)
    with pytest.warns(UserWarning, match=f"unseen pixels in frame {T - 1} ") as rec:
        again = build_anchor(frames, 24.0, TensorDepth(depth), traj, strict)
    assert again.report["cache"] == "hit"
    msg = str(rec[0].message)
    assert f"frame {T - 1} coverage {rep['coverage_min']:.1%} < anchor.min_coverage 60%" in msg
    assert f"mean coverage {rep['coverage_mean']:.1%}" in msg
    assert again.report["preflight_warning"] == msg


@pytest.mark.parametrize(
    ("coverage", "min_coverage", "expected"),
    [
        ([1.0, 0.9, 0.61], 0.6, None),
        ([0.59], 0.6, "this orbit reveals 41% unseen pixels in frame 0 "),
        ([1.0, 0.3, 1.0, 0.9], 0.6, "reveals 70% unseen pixels in frame 1 (frames count from 0; 20% on average over 4"),
        ([1.0, 0.3, 1.0, 0.9], 0.6, "mostly hallucinated there"),
        (torch.tensor([0.9, 0.65]), 0.7, "the result will be largely hallucinated there"),
        (0.5, 0.6, "frame 0 coverage 50.0% < anchor.min_coverage 60%, mean coverage 50.0%"),
    ],
)
def test_preflight_message_names_the_worst_frame(
    coverage: object, min_coverage: float, expected: str | None
) -> None:
    msg = preflight_message(coverage, min_coverage, "orbit")
    assert msg is None if expected is None else expected in msg, msg


def test_cache_miss_hit_and_invalidation(clip, tmp_path: Path, caplog) -> None:
    frames, depth = clip
    est = CountingDepth(depth)
    cfg = AnchorConfig(cache_dir=str(tmp_path / "cache"), progress=False)
    traj = make_trajectory("truck", 0.1, T)
    with caplog.at_level(logging.INFO, logger="recapture.anchor.pipeline"):
        first = build_anchor(frames, 24.0, est, traj, cfg)
        second = build_anchor(frames, 24.0, est, traj, cfg)
    key = first.report["cache_key"]
    messages = [r.getMessage() for r in caplog.records]
    assert f"anchor cache miss {key}" in messages and f"anchor cache hit {key}" in messages
    assert est.calls == 1 and first.report["cache"] == "miss" and second.report["cache"] == "hit"
    assert torch.equal(first.anchor.frames, second.anchor.frames) and torch.equal(
        first.anchor.mask, second.anchor.mask
    )
    assert torch.equal(first.depth, second.depth) and torch.equal(first.c2w, second.c2w)
    assert second.anchor.frames.dtype == first.anchor.frames.dtype
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{key}.pt"]
    # any change of input recomputes
    changes = [
        dict(trajectory=make_trajectory("truck", 0.11, T)),
        dict(config=AnchorConfig(cache_dir=cfg.cache_dir, footprint=3, progress=False)),
        dict(frames=frames.flip(-1)),
        dict(estimator=CountingDepth(depth * 2)),
        dict(K=intrinsics_from_fov(50.0, H, W)),
    ]
    keys = {key}
    for change in changes:
        res = build_anchor(
            change.get("frames", frames),
            24.0,
            change.get("estimator", est),
            change.get("trajectory", traj),
            change.get("config", cfg),
            K=change.get("K"),
        )
        assert res.report["cache"] == "miss"
        keys.add(res.report["cache_key"])
    assert len(keys) == len(changes) + 1
    # min_coverage only changes the warning: same entry
    relaxed = AnchorConfig(cache_dir=cfg.cache_dir, min_coverage=0.1, progress=False)
    assert build_anchor(frames, 24.0, est, traj, relaxed).report["cache"] == "hit"


def test_cache_write_is_atomic(clip, tmp_path: Path, monkeypatch) -> None:
    frames, depth = clip
    cache_dir = tmp_path / "cache"
    cfg = AnchorConfig(cache_dir=str(cache_dir), progress=False)
    traj = make_trajectory("pan", 3.0, T)
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):  # write half an entry, then die
        Path(f).write_bytes(b"PK\x03\x04 half an entry")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(anchor_cache.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        build_anchor(frames, 24.0, TensorDepth(depth), traj, cfg)
    assert list(cache_dir.iterdir()) == []  # no entry, no partial file
    monkeypatch.setattr(anchor_cache.torch, "save", real_save)
    res = build_anchor(frames, 24.0, TensorDepth(depth), traj, cfg)
    assert res.report["cache"] == "miss"
    entry = cache_dir / f"{res.report['cache_key']}.pt"
    assert entry.is_file()
    # an entry corrupted by something else is a miss (recomputed), not a crash
    entry.write_bytes(b"garbage")
    again = build_anchor(frames, 24.0, TensorDepth(depth), traj, cfg)
    assert again.report["cache"] == "miss" and torch.equal(again.anchor.frames, res.anchor.frames)
    assert build_anchor(frames, 24.0, TensorDepth(depth), traj, cfg).report["cache"] == "hit"


def test_fusion_reports_coverage_gain(tmp_path: Path) -> None:
    frames = torch.rand(5, 3, H, W) * 0.5
    depth = torch.full((5, 1, H, W), 8.0)
    for t in range(5):  # a near square moving right over a static wall
        frames[t, :, 20:40, 10 + 8 * t : 30 + 8 * t] = 1.0
        depth[t, :, 20:40, 10 + 8 * t : 30 + 8 * t] = 2.0
    frames[:, :, :, :] = torch.where(depth == 8.0, frames[:1].expand(5, -1, -1, -1), frames)
    traj = make_trajectory("truck", 0.1, 5, mode="direct")
    cfg = AnchorConfig(cache_dir=None, fuse_neighbors=2, progress=False)
    res = build_anchor(frames, 24.0, TensorDepth(depth), traj, cfg)
    fusion = res.report["fusion"]
    assert fusion["coverage_gain"] > 0.01
    assert res.report["coverage_mean"] == pytest.approx(
        fusion["coverage_mean_unfused"] + fusion["coverage_gain"]
    )


def test_write_anchor_outputs(clip, tmp_path: Path) -> None:
    from recapture.io import read_video

    _, depth = clip
    # smooth frames: random noise would make the codec smear noise into the caption bands checked below
    ramp = torch.linspace(0.1, 0.9, W).expand(H, W)
    frames = torch.stack([ramp, ramp.flip(-1), 0.5 * ramp])[None].repeat(T, 1, 1, 1)
    res = build_anchor(
        frames,
        12.0,
        TensorDepth(depth),
        make_trajectory("truck", 0.2, T),
        AnchorConfig(cache_dir=None, progress=False),
    )
    files = write_anchor_outputs(res, tmp_path / "out")
    assert set(files) == {"anchor", "mask", "preview", "trajectory", "report"}
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "anchor.mp4",
        "mask.mp4",
        "preview.mp4",
        "trajectory.json",
        "report.json",
    }
    report = json.loads(files["report"].read_text())
    assert report["num_frames"] == T and len(report["coverage"]) == T
    anchor = read_video(files["anchor"])
    # a short clip is written slowed to a watchable rate (issue 11), and the report says which
    assert anchor.frames.shape == (T, 3, H, W) and math.isclose(anchor.fps, report["video_fps"], rel_tol=1e-3)
    assert report["fps"] == 12.0 and report["video_fps"] == watchable_fps(12.0, T) < 12.0
    mask = read_video(files["mask"]).frames
    valid = res.anchor.mask.expand(-1, 3, -1, -1) > 0
    assert float(mask[valid].mean()) > 0.9 and float(mask[~valid].mean()) < 0.1
    preview = read_video(files["preview"]).frames
    assert preview.shape[0] == T and preview.shape[-1] > 3 * W
    # each preview frame shows its own coverage: the third tile's caption band changes between
    # frame 0 (valid 100%) and the last frame; the constant "source" and "anchor" bands only by
    # codec noise (the anchor tile's content moves, like the overlay's)
    pad = 4
    strip_h = preview.shape[-2] - H - 2 * pad
    assert round(100 * report["coverage"][0]) != round(100 * report["coverage"][-1])

    def band_change(tile: int) -> float:
        x0 = pad + tile * (W + pad)
        band = preview[:, :, pad : pad + strip_h, x0 : x0 + W]
        return float((band[0] - band[-1]).abs().mean())

    assert band_change(2) > 3 * max(band_change(0), band_change(1), 0.01)
    traj = json.loads(files["trajectory"].read_text())
    assert traj["num_frames"] == T
