"""Every bad input raises RecaptureError naming the value and the fix; interrupted writes leave nothing."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import recapture.io.writer as writer
from recapture.io import probe_video, read_video, write_video
from recapture.utils import RecaptureError


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("err") / "clip.mp4", torch.rand(30, 3, 32, 64), fps=30)


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(RecaptureError, match="does not exist") as err:
        read_video(missing)
    assert str(missing) in str(err.value)
    with pytest.raises(RecaptureError, match="does not exist"):
        probe_video(missing)


def test_text_file_renamed_mp4(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n")
    with pytest.raises(RecaptureError, match="could not be opened as a video") as err:
        read_video(fake)
    assert str(fake) in str(err.value)


def test_unknown_extension(tmp_path: Path) -> None:
    doc = tmp_path / "clip.txt"
    doc.write_text("x")
    with pytest.raises(RecaptureError, match=r"unsupported extension '\.txt'.*\.mp4"):
        read_video(doc)
    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with pytest.raises(RecaptureError, match="single image is not a video"):
        read_video(image)


def test_zero_frames(tmp_path: Path) -> None:
    # an AVI with a video stream and no frames, and an mp4 with no video stream at all
    empty = tmp_path / "empty.avi"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(24))
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(RecaptureError, match="has 0 frames") as err:
        read_video(empty)
    assert str(empty) in str(err.value)
    no_stream = tmp_path / "nostream.mp4"
    with av.open(str(no_stream), "w") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(24))
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(RecaptureError, match="no video stream|could not be opened"):
        read_video(no_stream)


def test_fewer_frames_than_asked(clip: Path) -> None:
    expected = (
        f"asked for 25 frames from start 0 with stride 2 but {clip} has 30 frames: only 15 are available; "
        "lower num_frames or stride"
    )
    for backend in ("auto", "pyav"):
        with pytest.raises(RecaptureError) as err:
            read_video(clip, num_frames=25, stride=2, backend=backend)
        assert str(err.value) == expected
    with pytest.raises(RecaptureError, match="start=30 is past the end: .* has 30 frames"):
        read_video(clip, start=30)


def test_image_folder_mixed_sizes(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "a1.png")
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "a2.png")
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "a3.png")
    with pytest.raises(RecaptureError, match=r"a1\.png is 64x32 but a3\.png is 64x48"):
        read_video(tmp_path)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(RecaptureError, match="contains no images") as err:
        read_video(tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"stride": 0}, "stride=0"),
        ({"start": -1}, "start=-1"),
        ({"num_frames": 0}, "num_frames=0"),
        ({"size": 0}, "size=0"),
        ({"size": (64, 0)}, "size=(64, 0)"),
        ({"size": 64, "resize": "fit"}, "resize='fit'"),  # removed: it stretched the picture
        ({"backend": "opencv"}, "backend='opencv'"),
        ({"fps": -5.0}, "fps=-5.0"),
    ],
)
def test_bad_arguments(clip: Path, kwargs: dict, needle: str) -> None:
    with pytest.raises(RecaptureError) as err:
        read_video(clip, **kwargs)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("frames", "kwargs", "needle"),
    [
        (torch.rand(2, 64, 64), {}, "(2, 64, 64)"),
        (torch.rand(2, 4, 64, 64), {}, "(2, 4, 64, 64)"),
        (torch.rand(0, 3, 64, 64), {}, "0 frames"),
        (torch.full((1, 3, 8, 8), float("nan")), {}, "NaN"),
        (torch.rand(1, 3, 8, 8), {"fps": 0.0}, "fps=0.0"),
        (torch.rand(1, 3, 8, 8), {"crf": 60}, "crf=60"),
        (torch.rand(1, 3, 8, 8), {"suffix": ".gif"}, "'.gif'"),
    ],
)
def test_write_bad_input(tmp_path: Path, frames: torch.Tensor, kwargs: dict, needle: str) -> None:
    path = tmp_path / f"out{kwargs.pop('suffix', '.mp4')}"
    with pytest.raises(RecaptureError) as err:
        write_video(path, frames, **{"fps": 8.0, **kwargs})
    assert needle in str(err.value)
    assert not path.exists()


def test_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.mp4"
    original = writer._frame_to_av
    calls = []

    def failing(image: np.ndarray):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("encoder died")
        return original(image)

    monkeypatch.setattr(writer, "_frame_to_av", failing)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_video(target, torch.rand(6, 3, 64, 64), fps=8)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no partial file left next to it either

    # an existing output is kept intact when a rewrite fails
    monkeypatch.setattr(writer, "_frame_to_av", original)
    write_video(target, torch.rand(4, 3, 64, 64), fps=8)
    before = target.read_bytes()
    calls.clear()
    monkeypatch.setattr(writer, "_frame_to_av", failing)
    with pytest.raises(RuntimeError):
        write_video(target, torch.rand(6, 3, 64, 64), fps=8)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_frame_size_change_mid_video(tmp_path: Path) -> None:
    # a stream that switches resolution cannot be one clip: the frame and both sizes are named
    from recapture.io.video import _ResizingSink

    sink = _ResizingSink(3, 64, "crop", 64, tmp_path / "switch.mp4")
    sink(0, np.zeros((32, 64, 3), np.uint8))
    sink(1, np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(
        RecaptureError, match=r"switch\.mp4: frame 2 of the selection is 96x48 but earlier frames are 64x32"
    ):
        sink(2, np.zeros((48, 96, 3), np.uint8))
