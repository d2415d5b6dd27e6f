"""build_anchor / write_anchor_outputs: scaling, report, preflight warning, cache hit/miss/atomicity."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from recapture.anchor import AnchorConfig, build_anchor, write_anchor_outputs
from recapture.anchor import cache as anchor_cache
from recapture.cameras import intrinsics_from_fov, make_trajectory
from recapture.depth import TensorDepth
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
        pytest.warns(UserWarning, match=r"reveals \d+% unseen pixels") as rec,
    ):
        res = build_anchor(
            frames, 24.0, TensorDepth(depth), traj, AnchorConfig(cache_dir=None, progress=False)
        )
    msg = str(rec[0].message)
    unseen = round(100 * (1 - res.report["coverage_mean"]))
    assert (
        f"this orbit reveals {unseen}% unseen pixels; the result will be mostly hallucinated; try a smaller angle"
        in msg
    )
    assert res.report["preflight_warning"] == msg
    assert any("preflight" in r.getMessage() for r in caplog.records)


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

    frames, depth = clip
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
    assert anchor.frames.shape == (T, 3, H, W) and math.isclose(anchor.fps, 12.0, rel_tol=1e-3)
    mask = read_video(files["mask"]).frames
    valid = res.anchor.mask.expand(-1, 3, -1, -1) > 0
    assert float(mask[valid].mean()) > 0.9 and float(mask[~valid].mean()) < 0.1
    preview = read_video(files["preview"]).frames
    assert preview.shape[0] == T and preview.shape[-1] > 3 * W
    traj = json.loads(files["trajectory"].read_text())
    assert traj["num_frames"] == T
