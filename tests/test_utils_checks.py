"""The one video shape check, :func:`recapture.utils.check_video`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from recapture.utils import RecaptureError, check_video


def _message(*args: object, **kwargs: object) -> str:
    with pytest.raises(RecaptureError) as err:
        check_video(*args, **kwargs)
    return str(err.value)


def test_a_video_passes_and_returns_its_shape() -> None:
    assert check_video(torch.rand(4, 3, 8, 6), "frames") == (4, 3, 8, 6)
    assert check_video(torch.rand(0, 3, 8, 6), "frames") == (0, 3, 8, 6)  # empty videos are the caller's call


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 4, 3, 8, 8), (8, 8), (2, 1, 1, 3, 8, 8)])
def test_wrong_number_of_axes(shape: tuple[int, ...]) -> None:
    message = _message(torch.rand(shape), "anchor")
    assert message == f"anchor must be (T, 3, H, W), got {shape} ({len(shape)}-D, not 4-D)"


def test_wrong_channels() -> None:
    assert _message(torch.rand(4, 1, 8, 8), "Video.frames") == (
        "Video.frames must be (T, 3, H, W), got (4, 1, 8, 8) (1 channel, not 3)"
    )
    assert "4 channels, not 3" in _message(torch.rand(2, 4, 8, 8), "frames")


def test_tuple_channels() -> None:
    for c in (1, 3):
        assert check_video(torch.rand(2, c, 8, 8), "frames", channels=(3, 1)) == (2, c, 8, 8)
    message = _message(torch.rand(2, 4, 8, 8), "frames", channels=(3, 1))
    assert message == "frames must be (T, 3|1, H, W), got (2, 4, 8, 8) (4 channels, not 3 or 1)"


def test_any_channels() -> None:
    assert check_video(torch.rand(2, 7, 8, 8), "pred", channels=None) == (2, 7, 8, 8)
    assert _message(torch.rand(7, 8, 8), "pred", channels=None).startswith("pred must be (T, C, H, W), got")


def test_batched_forms() -> None:
    assert check_video(torch.rand(2, 4, 3, 8, 8), "clips", batched=True) == (2, 4, 3, 8, 8)
    assert _message(torch.rand(4, 3, 8, 8), "clips", batched=True) == (
        "clips must be (B, T, 3, H, W), got (4, 3, 8, 8) (4-D, not 5-D)"
    )
    # batched=None: either form
    assert check_video(torch.rand(4, 3, 8, 8), "video", batched=None) == (4, 3, 8, 8)
    assert check_video(torch.rand(1, 4, 3, 8, 8), "video", batched=None) == (1, 4, 3, 8, 8)
    assert _message(torch.rand(3, 8, 8), "video", batched=None) == (
        "video must be (B, T, 3, H, W) or (T, 3, H, W), got (3, 8, 8) (3-D, not 4-D or 5-D)"
    )


def test_first_axis_letter_for_image_batches() -> None:
    assert _message(torch.rand(3, 64, 64), "images", first_axis="B").startswith("images must be (B, 3, H, W), got")


def test_exact_shape() -> None:
    frames = torch.rand(4, 3, 32, 32)
    assert check_video(frames, "anchor", shape=(4, 3, 32, 32)) == (4, 3, 32, 32)
    assert check_video(frames, "anchor", shape=(None, 3, 32, None)) == (4, 3, 32, 32)
    assert _message(torch.rand(3, 3, 32, 16), "anchor", shape=(4, 3, 32, 32)) == (
        "anchor must be (T, 3, H, W) = (4, 3, 32, 32), got (3, 3, 32, 16) (T is 3, not 4, W is 16, not 32)"
    )
    assert _message(torch.rand(3, 3, 32, 16), "video", shape=(None, 3, 32, 32)).startswith(
        "video must be (T, 3, H, W) = (T, 3, 32, 32), got (3, 3, 32, 16) (W is 16, not 32)"
    )
    with pytest.raises(ValueError, match="does not fit"):  # a caller's bug, not a user error
        check_video(frames, "anchor", shape=(3, 32, 32))


def test_not_a_tensor() -> None:
    assert _message([[0.0]], "frames") == "frames must be (T, 3, H, W), got list (not a torch.Tensor)"
    assert "got ndarray (not a torch.Tensor)" in _message(np.zeros((4, 3, 8, 8)), "frames")
    assert "got NoneType" in _message(None, "frames")


def test_message_names_the_value_the_shape_and_the_fix() -> None:
    fix = "T = num_frames, H x W = the image prompt's size"
    message = _message(torch.rand(4, 96, 128), "my_anchor", fix=fix)
    assert message.startswith("my_anchor must be (T, 3, H, W)")
    assert "(4, 96, 128)" in message
    assert message.endswith(f"; {fix}")
    assert "\n" not in message
    assert "; " not in _message(torch.rand(4, 96, 128), "frames")  # no fix, no dangling separator


def test_utils_does_not_import_torch() -> None:
    code = "import sys, recapture.utils; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
