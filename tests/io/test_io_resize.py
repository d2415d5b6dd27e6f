"""Resize plans that keep the aspect ratio (analytic cases) and antialiased resizing (reference: PIL)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from recapture.io import ResizePlan, apply_resize, plan_resize, resize_frames, target_size
from recapture.utils import RecaptureError


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize(
    ("hw", "size", "multiple", "expected"),
    [
        ((720, 1280), 1024, 64, (576, 1024)),
        ((540, 960), 1024, 64, (576, 1024)),
        ((540, 960), 512, 64, (320, 512)),  # 288 is 4.5 multiples: rounds half up
        ((1280, 720), 1024, 64, (1024, 576)),  # portrait
        ((100, 1000), 512, 64, (64, 512)),  # never below one multiple
        ((720, 1280), 1000, 64, (576, 1024)),  # the long side is rounded too
        ((720, 1280), 1000, 1, (563, 1000)),  # 562.5 rounds half up
        ((720, 1280), (512, 512), 64, (512, 512)),  # an (H, W) size is exact ...
        ((720, 1280), (250, 333), 64, (250, 333)),  # ... and multiple is unused
        ((37, 53), None, 64, (37, 53)),
    ],
)
def test_target_size(hw: tuple[int, int], size, multiple: int, expected: tuple[int, int], mode: str) -> None:
    # the output size does not depend on crop vs pad: only how the picture fills it
    assert target_size(*hw, size, mode, multiple) == expected
    assert plan_resize(*hw, size, mode, multiple).output == expected


def test_plan_720p_at_512() -> None:
    # the first example: it used to be stretched to 512x320 (11% distortion)
    crop = plan_resize(720, 1280, 512)
    assert crop == ResizePlan(
        source=(720, 1280), output=(320, 512), scale=4 / 9, scaled=(320, 569), crop=(0, 28, 320, 512)
    )
    assert not crop.upscales and crop.upscale_message() is None
    pad = plan_resize(720, 1280, 512, "pad")
    assert pad == ResizePlan(
        source=(720, 1280), output=(320, 512), scale=0.4, scaled=(288, 512), crop=(0, 0, 288, 512),
        pad=(16, 16, 0, 0),
    )  # fmt: skip


def test_plan_cinemascope_at_192() -> None:
    # 640x272 (2.35:1) used to become 192x64 squashed; now 192x82 with 9 + 9 rows cut
    plan = plan_resize(272, 640, 192)
    assert plan.output == (64, 192) and plan.scale == pytest.approx(0.3)
    assert plan.scaled == (82, 192) and plan.crop == (9, 0, 64, 192)
    pad = plan_resize(272, 640, 192, "pad")
    assert pad.scale == pytest.approx(64 / 272) and pad.scaled == (64, 151) and pad.pad == (0, 0, 20, 21)


def test_plan_small_video_upscale_is_named() -> None:
    plan = plan_resize(30, 40, 192)
    assert plan.output == (128, 192) and plan.scale == pytest.approx(4.8)
    assert plan.scaled == (144, 192) and plan.crop == (8, 0, 128, 192)
    assert plan.upscales
    assert plan.upscale_message() == (
        "upscaling 40x30 by 4.8x to 192x128: expect blur; use a larger source or a smaller --data.size"
    )


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_plans_never_distort(mode: str) -> None:
    # over many shapes: one scale for both sides (up to rounding to whole pixels), the crop window
    # inside the scaled frame, the padding exactly filling the output
    for h in range(20, 1500, 37):
        for w in range(20, 2200, 53):
            for size in (192, 512, 1024, (256, 384)):
                p = plan_resize(h, w, size, mode)
                assert abs(p.scaled[0] - h * p.scale) <= 1 and abs(p.scaled[1] - w * p.scale) <= 1
                top, left, ch, cw = p.crop
                assert 0 <= top and 0 <= left and top + ch <= p.scaled[0] and left + cw <= p.scaled[1]
                pt, pb, pl, pr = p.pad
                assert min(p.pad) >= 0 and (ch + pt + pb, cw + pl + pr) == p.output
                if mode == "crop":
                    assert p.pad == (0, 0, 0, 0) and (top, left) == (
                        (p.scaled[0] - ch) // 2,
                        (p.scaled[1] - cw) // 2,
                    )
                else:
                    assert (top, left) == (0, 0) and abs(pt - pb) <= 1 and abs(pl - pr) <= 1
                if isinstance(size, int):
                    assert p.output[0] % 64 == 0 and p.output[1] % 64 == 0


def test_square_stays_square() -> None:
    # a centred white square in a 640x272 frame: at size 192 it must stay square (it used to be
    # squashed to 41x32 pixels)
    x = torch.zeros(1, 3, 272, 640)
    x[..., 68:204, 252:388] = 1.0
    y = resize_frames(x, 192)
    assert y.shape == (1, 3, 64, 192)
    white = y[0, 0] > 0.5
    height = int(white.any(dim=1).sum())
    width = int(white.any(dim=0).sum())
    assert width == pytest.approx(40.8, abs=1.5) and height == pytest.approx(40.8, abs=1.5)


def test_pad_adds_black_bars() -> None:
    x = torch.full((2, 3, 64, 128), 255, dtype=torch.uint8)
    y = resize_frames(x, (128, 128), "pad")
    assert y.shape == (2, 3, 128, 128)
    assert torch.equal(y[:, :, :32], torch.zeros(2, 3, 32, 128))
    assert torch.equal(y[:, :, 96:], torch.zeros(2, 3, 32, 128))
    assert torch.equal(y[:, :, 32:96], torch.ones(2, 3, 64, 128))


def test_resize_matches_pil_bilinear() -> None:
    # torch's antialiased bilinear follows PIL's convolution resampling: same numbers when shrinking
    x = torch.rand(2, 3, 90, 160)
    y = resize_frames(x, 80, "crop", 1)
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
    assert plan_resize(8, 8, None).is_identity


def test_upscale_warning_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="recapture.io.resize"):
        resize_frames(torch.rand(1, 3, 30, 40), 192)
    assert "upscaling 40x30 by 4.8x to 192x128" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recapture.io.resize"):
        resize_frames(torch.rand(1, 3, 90, 160), 64, multiple=1)
    assert "upscaling" not in caplog.text


def test_apply_resize_checks_the_plan() -> None:
    plan = plan_resize(30, 40, 64)
    with pytest.raises(RecaptureError, match=r"\(N, C, 30, 40\)"):
        apply_resize(torch.rand(1, 3, 31, 40), plan)


@pytest.mark.parametrize(
    ("size", "mode", "multiple", "needle"),
    [
        (0, "crop", 64, "size=0"),
        ((64, -1), "crop", 64, "size=(64, -1)"),
        (64, "fit", 64, "'fit'"),  # the old stretching mode is gone
        (64, "stretch", 64, "'stretch'"),
        (64, "crop", 0, "multiple=0"),
    ],
)
def test_bad_size_arguments(size, mode: str, multiple: int, needle: str) -> None:
    with pytest.raises(RecaptureError) as err:
        target_size(100, 100, size, mode, multiple)
    assert needle in str(err.value)
