"""Output videos are slowed to a watchable length, and say at which rate they were written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recapture.io import read_video, watchable_fps
from recapture.utils import RecaptureError


def test_short_clips_are_slowed_long_ones_kept() -> None:
    assert watchable_fps(30.0, 14) == pytest.approx(9.333)  # 14 frames last 1.5 s, not 0.47 s
    assert watchable_fps(8.0, 8) == pytest.approx(5.333)
    assert watchable_fps(7.0, 25) == 7.0  # already 3.6 s long
    assert watchable_fps(30.0, 1) == 1.0
    with pytest.raises(RecaptureError, match="fps=0"):
        watchable_fps(0, 14)


def test_anchor_outputs_are_written_at_the_watchable_rate(tmp_path: Path) -> None:
    from recapture.cli import cli_main

    repo = Path(__file__).resolve().parents[2]
    cli_main(["anchor", "--config", str(repo / "configs" / "demo.yaml"), "--model.components.tiny", "true",
              "--data.size", "128", "--data.num_frames", "4", "--output", str(tmp_path / "anchor"),
              "--data.anchor.cache_dir", str(tmp_path / "cache")])
    report = json.loads((tmp_path / "anchor" / "report.json").read_text())
    assert report["fps"] == 8.0 and report["video_fps"] == pytest.approx(2.667)
    video = read_video(tmp_path / "anchor" / "anchor.mp4")
    assert video.num_frames == 4 and video.fps == pytest.approx(2.667, abs=0.01)


@pytest.mark.parametrize(("size", "expected"), [(None, (64, 96)), ("128", (64, 128)), ("[32, 160]", (32, 160))])
def test_data_size_pair_is_used_exactly(tmp_path: Path, size: str | None, expected: tuple[int, int]) -> None:
    """configs/demo.yaml asks for the prior's own 64x96 (not a multiple of 64): a pair is not rounded."""
    from recapture.cli import cli_main
    from recapture.utils import RecaptureError

    repo = Path(__file__).resolve().parents[2]
    args = ["anchor", "--config", str(repo / "configs" / "demo.yaml"), "--model.components.tiny", "true",
            "--data.num_frames", "2", "--output", str(tmp_path / "anchor"),
            "--data.anchor.cache_dir", str(tmp_path / "cache")]
    cli_main(args + (["--data.size", size] if size else []))
    video = read_video(tmp_path / "anchor" / "anchor.mp4")
    assert tuple(video.frames.shape[-2:]) == expected
    with pytest.raises((RecaptureError, SystemExit)):
        cli_main(args + ["--data.size", "[64, 0]", "--output", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
