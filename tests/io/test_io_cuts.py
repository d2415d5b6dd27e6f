"""Scene-cut detection: synthetic pans, lighting changes and concatenated clips; the warning text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recapture.io import cut_warning, detect_cuts, read_video, write_video
from recapture.utils import RecaptureError

H, W = 96, 128


def texture(seed: int, base: tuple[float, float, float], h: int = 192, w: int = 640) -> torch.Tensor:
    """A smooth random ``(3, h, w)`` picture around colour ``base`` (a scene to pan over)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 16, w // 16, generator=g)
    fine = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    return (torch.tensor(base)[:, None, None] + 0.35 * (fine - 0.5)).clamp(0, 1)


def pan(scene: torch.Tensor, frames: int, dx: int = 3, dy: int = 0) -> torch.Tensor:
    """``(T, 3, H, W)``: a window sliding ``dx``/``dy`` pixels per frame over ``scene``."""
    return torch.stack([scene[:, t * dy : t * dy + H, t * dx : t * dx + W] for t in range(frames)])


def shot_a(frames: int, dx: int = 3) -> torch.Tensor:
    return pan(texture(0, (0.75, 0.45, 0.25)), frames, dx=dx)  # warm, panning right


def shot_b(frames: int) -> torch.Tensor:
    return pan(texture(1, (0.25, 0.45, 0.7)), frames, dx=2, dy=2).flip(-1)  # cool, moving down-left


@pytest.mark.parametrize("dx", [1, 3, 13])  # 13 px is 10% of the width per frame: a fast pan
def test_smooth_pan_has_no_cuts(dx: int) -> None:
    assert detect_cuts(shot_a(30, dx=dx)) == []
    assert detect_cuts(shot_b(40)) == []


def test_lighting_changes_are_not_cuts() -> None:
    clip = shot_a(24)
    step = clip.clone()
    step[12:] *= 0.55  # a light switched off
    gamma = clip.clone()
    gamma[8:] = gamma[8:] ** 0.6  # exposure jump
    ramp = clip * torch.linspace(1.0, 0.4, 24)[:, None, None, None]  # a fade of the light
    warm = clip.clone()
    warm[10:, 2] *= 0.6  # a white-balance jump
    for frames in (step, gamma, ramp, warm):
        assert detect_cuts(frames) == []


def test_concatenated_clips() -> None:
    a, b = shot_a(10), shot_b(8)
    assert detect_cuts(torch.cat([a, b])) == [10]
    assert detect_cuts(torch.cat([a, b, shot_a(5)])) == [10, 18]
    u8 = (torch.cat([b, a]) * 255).round().to(torch.uint8)
    assert detect_cuts(u8) == [8]
    assert detect_cuts(a[:1]) == []


def test_detect_cuts_checks_its_input() -> None:
    with pytest.raises(RecaptureError, match=r"\(T, 3, H, W\), got \(4, 96, 128\)"):
        detect_cuts(torch.rand(4, H, W))


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames: shot A for source frames 0-11, shot B from 12 on."""
    frames = torch.cat([shot_a(12), shot_b(28)])
    return write_video(tmp_path_factory.mktemp("cut") / "cut.mp4", frames, fps=24)


def test_warning_in_source_frames(cut_video: Path) -> None:
    clip = read_video(cut_video, start=4, num_frames=14)
    cuts = detect_cuts(clip.frames)
    assert cuts == [8]
    message = cut_warning(
        cuts, clip.num_frames, start=4, stride=1, total_frames=clip.source_num_frames, path="cut.mp4"
    )
    assert message == (
        "cut.mp4: hard scene cut between source frames 11 and 12 (clip frame 8 of 14): the new camera "
        "trajectory would be rendered straight through it. To avoid it use --data.start 4 --data.num_frames 8 "
        "(the longest part of this clip without a cut) or --data.start 12 to keep 14 frames after the cut "
        "(frames outside this clip were not checked for cuts)"
    )
    # both suggestions really avoid the cut
    assert detect_cuts(read_video(cut_video, start=4, num_frames=8).frames) == []
    assert detect_cuts(read_video(cut_video, start=12, num_frames=14).frames) == []


def test_warning_with_stride(cut_video: Path) -> None:
    clip = read_video(cut_video, start=1, stride=3, num_frames=13)
    cuts = detect_cuts(clip.frames)
    assert cuts == [4]  # clip frame 4 is source frame 13, the first of shot B
    message = cut_warning(cuts, 13, start=1, stride=3, total_frames=40)
    assert message is not None and message.startswith(
        "hard scene cut between source frames 10 and 13 (clip frame 4 of 13)"
    )
    # 13 + 3 * 12 = 49 is past the end and 10 - 36 before the start: only the shorter clip is offered
    assert "use --data.start 13 --data.num_frames 9 (the longest part of this clip without a cut)" in message
    assert "to keep" not in message
    assert detect_cuts(read_video(cut_video, start=13, stride=3, num_frames=9).frames) == []


def test_cut_warning_text() -> None:
    assert cut_warning([], 14) is None
    two = cut_warning([3, 9], 14, start=10, stride=2, flag_prefix="--")
    assert two is not None and two.startswith(
        "hard scene cuts between source frames 14 and 16, between source frames 26 and 28 (clip frames 3, 9 of 14)"
    )
    assert "--start 16 --num_frames 6" in two
    assert "--start 28 to keep 14 frames after the last cut, if the video is that long" in two
    before = cut_warning([12], 14, start=30, total_frames=44)
    assert before is not None and "--data.start 28 to keep 14 frames before the cut" in before
    with pytest.raises(RecaptureError, match="1 .. num_frames - 1 = 13"):
        cut_warning([14], 14)


@pytest.fixture(scope="module")
def shared_clips() -> dict[str, torch.Tensor]:
    folder = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "videos"  # as conftest's
    if not folder.is_dir():
        pytest.skip("../shared/data is absent")
    return {p.name: read_video(p, size=128).frames for p in sorted(folder.glob("*.mp4"))}


@pytest.mark.shared
@pytest.mark.parametrize("stride", [1, 4, 16])
def test_no_cuts_in_the_example_videos(shared_clips: dict[str, torch.Tensor], stride: int) -> None:
    assert len(shared_clips) == 3
    for name, frames in shared_clips.items():
        assert detect_cuts(frames[::stride]) == [], name


@pytest.mark.shared
def test_example_videos_concatenated(shared_clips: dict[str, torch.Tensor]) -> None:
    clips = [frames[40:60] for frames in shared_clips.values()]
    assert detect_cuts(torch.cat(clips)) == [20, 40]


def test_the_data_module_warns_when_the_clip_spans_a_cut(cut_video: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What `recapture fit/anchor` read: the source clip is checked and the warning reaches the log."""
    from recapture.training.datamodule import ReCaptureDataModule

    with caplog.at_level("WARNING", logger="recapture"):
        frames, _, _, _ = ReCaptureDataModule(video=str(cut_video), num_frames=14, start=4, size=64).load_source()
    assert frames.shape[0] == 14
    assert "hard scene cut between source frames 11 and 12" in caplog.text and "--data.start 12" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="recapture"):
        ReCaptureDataModule(video=str(cut_video), num_frames=14, start=12, size=64).load_source()
    assert "scene cut" not in caplog.text
