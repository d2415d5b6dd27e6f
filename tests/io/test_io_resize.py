"""Output-size rules and antialiased resizing (reference: PIL's bilinear resize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recapture.io import resize_frames, target_size
from recapture.utils import RecaptureError


@pytest.mark.parametrize(
    ("hw", "size", "mode", "multiple", "expected"),
    [
        ((720, 1280), 1024, "fit", 64, (576, 1024)),
        ((540, 960), 1024, "fit", 64, (576, 1024)),
        ((540, 960), 512, "fit", 64, (320, 512)),  # 288 is 4.5 multiples: rounds half up
        ((1280, 720), 1024, "fit", 64, (1024, 576)),  # portrait
        ((100, 1000), 512, "fit", 64, (64, 512)),  # never below one multiple
        ((720, 1280), (576, 576), "fit", 64, (320, 576)),  # fit inside: 324 -> 320
        ((720, 1280), (512, 512), "crop", 64, (512, 512)),
        ((720, 1280), (250, 333), "crop", 64, (250, 333)),  # crop is exact, multiple unused
        ((720, 1280), 1000, "fit", 1, (563, 1000)),  # 562.5 rounds half up
        ((37, 53), None, "fit", 64, (37, 53)),
    ],
)
def test_target_size(hw: tuple[int, int], size, mode: str, multiple: int, expected: tuple[int, int]) -> None:
    assert target_size(*hw, size, mode, multiple) == expected


def test_resize_matches_pil_bilinear() -> None:
    # torch's antialiased bilinear follows PIL's convolution resampling: same numbers when shrinking
    x = torch.rand(2, 3, 90, 160)
    y = resize_frames(x, 80, "fit", 1)
    assert y.shape == (2, 3, 45, 80)
    for t in range(2):
        ref = np.stack(
            [
                np.asarray(Image.fromarray(x[t, c].numpy(), mode="F").resize((80, 45), Image.BILINEAR))
                for c in range(3)
            ]
        )
        np.testing.assert_allclose(y[t].numpy(), ref, atol=1e-5)


def test_crop_takes_centre_and_uint8_input() -> None:
    # a 64x128 frame whose left and right quarters are red and the middle half green:
    # cropping to 64x64 keeps only the green middle
    x = torch.zeros(1, 3, 64, 128, dtype=torch.uint8)
    x[:, 0, :, :32] = 255
    x[:, 0, :, 96:] = 255
    x[:, 1, :, 32:96] = 255
    y = resize_frames(x, (64, 64), "crop")
    assert y.dtype == torch.float32 and y.shape == (1, 3, 64, 64)
    assert torch.equal(y[0, 1], torch.ones(64, 64)) and y[0, 0].max() == 0


def test_no_size_is_identity_and_scales_uint8() -> None:
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(resize_frames(x), x.float() / 255)


@pytest.mark.parametrize(
    ("size", "mode", "multiple", "needle"),
    [
        (0, "fit", 64, "size=0"),
        ((64, -1), "fit", 64, "size=(64, -1)"),
        (64, "crop", 64, "size=64"),
        (64, "stretch", 64, "'stretch'"),
        (64, "fit", 0, "multiple=0"),
    ],
)
def test_bad_size_arguments(size, mode: str, multiple: int, needle: str) -> None:
    with pytest.raises(RecaptureError) as err:
        target_size(100, 100, size, mode, multiple)
    assert needle in str(err.value)
