"""make_grid, overlay_mask, save_image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recapture.io import make_grid, overlay_mask, save_image
from recapture.utils import RecaptureError


def test_grid_layout_without_captions() -> None:
    a = torch.full((5, 3, 32, 64), 0.25)
    b = torch.full((5, 3, 16, 48), 0.75)  # shorter and narrower: letterboxed in a 32x64 cell
    grid = make_grid([a, b, a], ncols=2, pad=4)
    assert grid.shape == (5, 3, 2 * 32 + 3 * 4, 2 * 64 + 3 * 4)
    assert torch.equal(grid[:, :, 4:36, 4:68], a)  # first cell holds a exactly
    # b centred in the second cell: offsets (32-16)//2 = 8 and (64-48)//2 = 8
    assert torch.equal(grid[:, :, 4 + 8 : 4 + 8 + 16, 72 + 8 : 72 + 8 + 48], b)
    assert grid[:, :, 4:8, 72:136].max() < 0.25  # letterbox bars are background
    assert torch.equal(grid[:, :, 40:72, 4:68], a)  # third tile wraps to the second row


def test_grid_captions_masks_and_images() -> None:
    video = torch.rand(4, 3, 64, 128)
    mask = (torch.rand(4, 1, 64, 128) > 0.5).float()
    still = torch.rand(3, 64, 128)  # a single image repeats over time
    grid = make_grid([video, mask, still], captions=["source", "mask", "a very long caption " * 10])
    assert grid.shape[0] == 4 and grid.shape[1] == 3 and grid.shape[-1] == 3 * 128 + 4 * 4
    strip_h = grid.shape[-2] - 64 - 2 * 4
    assert 10 <= strip_h <= 40
    strip = grid[0, :, 4 : 4 + strip_h, 4 : 4 + 128]
    assert strip.max() > 0.9  # white text was drawn
    assert torch.equal(grid[:, :, 4 + strip_h : 4 + strip_h + 64, 4:132], video)
    assert torch.equal(grid[:, 0:1, 4 + strip_h : 4 + strip_h + 64, 136:264], mask)  # grey
    assert torch.equal(grid[2, :, 4 + strip_h : 4 + strip_h + 64, 268:396], still)


def test_grid_per_frame_captions_change_only_their_band() -> None:
    video = torch.full((3, 3, 32, 160), 0.5)
    still = torch.full((3, 32, 160), 0.5)  # a single image with a per-frame caption
    per_frame = ["valid 100%", "valid 100%", "valid 53%"]
    grid = make_grid([video, still, video], captions=["source", per_frame, ["same"] * 3])
    strip_h = grid.shape[-2] - 32 - 2 * 4

    def band(tile: int) -> torch.Tensor:
        x0 = 4 + tile * (160 + 4)
        return grid[:, :, 4 : 4 + strip_h, x0 : x0 + 160]

    assert torch.equal(band(1)[0], band(1)[1])  # same text on frames 0 and 1
    assert (band(1)[0] - band(1)[2]).abs().amax() > 0.5  # the text changed on frame 2
    for tile in (0, 2):  # a string, or a list repeating one string: identical on every frame
        assert torch.equal(band(tile)[0], band(tile)[1]) and torch.equal(band(tile)[0], band(tile)[2])
    assert torch.equal(band(1)[2], make_grid([still], captions=["valid 53%"])[0, :, 4 : 4 + strip_h, 4:164])
    assert torch.equal(grid[:, :, 4 + strip_h : 4 + strip_h + 32, 168:328], video)  # tiles untouched


@pytest.mark.parametrize(
    ("videos", "kwargs", "needle"),
    [
        ([], {}, "no videos"),
        ([torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)], {}, "different frame counts"),
        ([torch.rand(2, 2, 8, 8)], {}, "videos[0]"),
        ([torch.rand(2, 3, 8, 8)], {"captions": ["a", "b"]}, "2 captions for 1 videos"),
        ([torch.rand(2, 3, 8, 8)], {"ncols": 0}, "ncols=0"),
        ([torch.rand(2, 3, 8, 8)], {"captions": [["a", "b", "c"]]}, "captions[0] has 3 per-frame captions for 2 frames"),
    ],
)
def test_grid_errors(videos: list, kwargs: dict, needle: str) -> None:
    with pytest.raises(RecaptureError) as err:
        make_grid(videos, **kwargs)
    assert needle in str(err.value)


def test_overlay_leaves_valid_pixels_untouched() -> None:
    frames = torch.rand(3, 3, 16, 32)
    mask = (torch.rand(3, 1, 16, 32) > 0.4).float()
    out = overlay_mask(frames, mask, color=(1.0, 0.0, 0.0), alpha=0.5)
    assert out.shape == frames.shape
    valid = mask.expand_as(frames).bool()
    assert torch.equal(out[valid], frames[valid])
    expected = 0.5 * frames + 0.5 * torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    assert torch.allclose(out[~valid], expected.expand_as(frames)[~valid])
    # one (1, H, W) bool mask for all frames
    single = overlay_mask(frames, mask[0].bool())
    keep = mask[0, 0] > 0
    assert torch.equal(single[..., keep], frames[..., keep])
    assert not torch.isclose(single[..., ~keep], frames[..., ~keep]).all()


@pytest.mark.parametrize(
    ("mask", "needle"),
    [
        (torch.ones(3, 16, 32), "(..., 1, H, W)"),
        (torch.ones(2, 1, 16, 32), "leading axes"),
        (torch.ones(3, 1, 8, 32), "(..., 1, H, W)"),
    ],
)
def test_overlay_shape_errors(mask: torch.Tensor, needle: str) -> None:
    with pytest.raises(RecaptureError) as err:
        overlay_mask(torch.rand(3, 3, 16, 32), mask)
    assert needle in str(err.value)


def test_save_image(tmp_path: Path) -> None:
    image = torch.rand(3, 20, 30)
    path = save_image(tmp_path / "sub" / "a.png", image)
    back = np.asarray(Image.open(path))
    assert back.shape == (20, 30, 3)
    np.testing.assert_array_equal(back, (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    grey = np.asarray(Image.open(save_image(tmp_path / "m.png", torch.ones(1, 4, 4))))
    assert grey.shape == (4, 4, 3) and grey.min() == 255
    with pytest.raises(RecaptureError, match=r"\(4, 3, 20, 30\)"):
        save_image(tmp_path / "b.png", torch.rand(4, 3, 20, 30))
    with pytest.raises(RecaptureError, match="'.webp'"):
        save_image(tmp_path / "b.webp", image)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.png", "m.png"]
