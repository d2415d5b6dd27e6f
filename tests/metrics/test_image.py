"""PSNR / SSIM against skimage, masked variants against a numpy/scipy reference of GCD's recipe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from recapture.metrics import (
    VideoPSNR,
    VideoSSIM,
    masked_psnr,
    masked_ssim,
    psnr,
    ssim,
    video_psnr,
    video_ssim,
)
from recapture.metrics.image import binary_erosion, uniform_filter
from recapture.utils import RecaptureError


def _pair(
    rng: np.random.Generator, shape: tuple[int, ...], noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    a = rng.random(shape)
    b = np.clip(a + noise * rng.standard_normal(shape), 0, 1)
    return a, b


def _gcd_masked_ssim_reference(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Straightforward GCD recipe on (C, H, W) arrays and an (H, W) bool mask."""
    _, full = structural_similarity(a, b, data_range=1.0, channel_axis=0, full=True)
    eroded = ndi.binary_erosion(mask, iterations=3)[3:-3, 3:-3]
    if eroded.sum() == 0:
        return math.nan
    per_channel = [full[c, 3:-3, 3:-3][eroded].mean() for c in range(full.shape[0])]
    return float(np.mean(per_channel))


def _masked_psnr_reference(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    sel = np.broadcast_to(mask, a.shape)
    return float(10 * np.log10(1.0 / np.mean((a[sel] - b[sel]) ** 2)))


@pytest.mark.parametrize("shape", [(3, 32, 24), (3, 9, 7), (1, 16, 40)])
def test_psnr_ssim_match_skimage(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    for noise in (0.02, 0.3):
        a, b = _pair(rng, shape, noise)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        ref_ssim = structural_similarity(a, b, data_range=1.0, channel_axis=0)
        assert ssim(ta, tb).item() == pytest.approx(ref_ssim, abs=1e-5)
        assert psnr(ta, tb).item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-5)


def test_float32_inputs_match_float64_skimage() -> None:
    rng = np.random.default_rng(2)
    a, b = _pair(rng, (3, 20, 30))
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    ref = structural_similarity(
        a32.astype(np.float64), b32.astype(np.float64), data_range=1.0, channel_axis=0
    )
    assert ssim(torch.from_numpy(a32), torch.from_numpy(b32)).item() == pytest.approx(ref, abs=1e-5)


def test_batched_frames_are_independent() -> None:
    rng = np.random.default_rng(3)
    a, b = _pair(rng, (2, 4, 3, 16, 12))
    out = ssim(torch.from_numpy(a), torch.from_numpy(b))
    assert out.shape == (2, 4)
    ref = structural_similarity(a[1, 2], b[1, 2], data_range=1.0, channel_axis=0)
    assert out[1, 2].item() == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("shape", [(1, 2, 12, 13), (1, 1, 4, 3), (2, 1, 2, 9)])
def test_uniform_filter_matches_scipy_reflect(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, dtype=torch.float64)
    ref = ndi.uniform_filter(x.numpy(), size=(1, 1, 7, 7), mode="reflect")
    assert np.allclose(uniform_filter(x).numpy(), ref, atol=1e-12)


def test_binary_erosion_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    m = rng.random((2, 15, 11)) > 0.15
    for it in (1, 3):
        ref = np.stack([ndi.binary_erosion(mm, iterations=it) for mm in m])
        assert (binary_erosion(torch.from_numpy(m), it).numpy() == ref).all()


def test_masked_metrics_match_reference() -> None:
    rng = np.random.default_rng(5)
    a, b = _pair(rng, (3, 24, 32))
    yy, xx = np.mgrid[:24, :32]
    mask = ((yy - 10) ** 2 + (xx - 14) ** 2 < 80) | (xx > 26)
    ta, tb, tm = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(mask)[None]
    assert masked_ssim(ta, tb, tm).item() == pytest.approx(_gcd_masked_ssim_reference(a, b, mask), abs=1e-6)
    assert masked_psnr(ta, tb, tm).item() == pytest.approx(_masked_psnr_reference(a, b, mask), abs=1e-6)
    # float {0, 1} masks behave like bool masks
    assert masked_ssim(ta, tb, tm.double()).item() == pytest.approx(masked_ssim(ta, tb, tm).item(), abs=0)


def test_all_ones_mask_gives_unmasked_values() -> None:
    rng = np.random.default_rng(6)
    a, b = _pair(rng, (5, 3, 20, 18))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ones = torch.ones(5, 1, 20, 18)
    assert torch.allclose(masked_psnr(ta, tb, ones), psnr(ta, tb), atol=1e-10)
    assert torch.allclose(masked_ssim(ta, tb, ones), ssim(ta, tb), atol=1e-10)
    assert torch.allclose(video_ssim(ta, tb, ones), video_ssim(ta, tb), atol=1e-10)


def test_empty_masks_are_nan_and_skipped_by_nanmean() -> None:
    rng = np.random.default_rng(7)
    a, b = _pair(rng, (3, 3, 16, 16))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    mask = torch.zeros(3, 1, 16, 16)
    mask[1, :, 2:14, 2:14] = 1  # frame 1 only; survives erosion + crop
    frame_values = masked_ssim(ta, tb, mask)
    assert math.isnan(frame_values[0]) and math.isnan(frame_values[2]) and not math.isnan(frame_values[1])
    assert video_ssim(ta, tb, mask).item() == pytest.approx(frame_values[1].item())
    assert math.isnan(masked_psnr(ta, tb, torch.zeros(3, 1, 16, 16))[0])
    # a thin mask disappears under erosion -> NaN for SSIM but not PSNR
    thin = torch.zeros(3, 1, 16, 16)
    thin[:, :, 8, :] = 1
    assert torch.isnan(masked_ssim(ta, tb, thin)).all()
    assert not torch.isnan(masked_psnr(ta, tb, thin)).any()


def test_metric_classes_reduce_per_video_then_over_videos() -> None:
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 3, 16, 16), torch.rand(2, 3, 3, 16, 16)
    m = VideoSSIM()
    m.update(pred, target)
    m.update(pred[0], target[0])  # (T, C, H, W) works too
    expected = torch.stack([ssim(pred[i], target[i]).mean() for i in (0, 1, 0)]).mean()
    assert m.compute().item() == pytest.approx(expected.item(), abs=1e-10)

    # empty-mask videos are left out of the mean over videos
    mask = torch.ones(2, 3, 1, 16, 16)
    mask[1] = 0
    p = VideoPSNR()
    p.update(pred, target, mask)
    assert p.compute().item() == pytest.approx(video_psnr(pred[0], target[0]).item(), abs=1e-10)

    # states merge like a distributed reduction
    a, b = VideoPSNR(), VideoPSNR()
    a.update(pred[:1], target[:1])
    b.update(pred[1:], target[1:])
    a.merge_state(b)
    whole = VideoPSNR()
    whole.update(pred, target)
    assert a.compute().item() == pytest.approx(whole.compute().item(), abs=1e-10)


def test_shape_errors_name_the_problem() -> None:
    with pytest.raises(RecaptureError, match="differ in shape"):
        video_psnr(torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 9))
    with pytest.raises(RecaptureError, match=r"\(B, T, 1, H, W\)"):
        video_ssim(torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8), torch.ones(3, 8, 8))
    with pytest.raises(RecaptureError, match="pred must be"):
        video_psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
