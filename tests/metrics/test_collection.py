"""Metric names, compute_metrics and MetricSet."""

from __future__ import annotations

import pytest
import torch

from recapture.metrics import METRIC_NAMES, MetricModels, MetricSet, compute_metrics, parse_metric_names
from recapture.metrics.image import video_psnr, video_ssim
from recapture.utils import RecaptureError


def test_parse_names_aliases_and_masked_variants() -> None:
    assert parse_metric_names("psnr, SSIM") == ["psnr", "ssim"]
    assert parse_metric_names(["psnr", "lpips"], with_mask=True) == [
        "psnr",
        "psnr_masked",
        "lpips",
        "lpips_masked",
    ]
    assert parse_metric_names("camera") == ["rot_err", "trans_err", "cammc"]
    assert "object_class" not in parse_metric_names("vbench") and len(parse_metric_names("vbench")) == 7
    with pytest.raises(RecaptureError, match="unknown metric 'psnrr'.*ssim_masked"):
        parse_metric_names("psnr,psnrr")
    assert set(parse_metric_names(",".join(METRIC_NAMES))) == set(METRIC_NAMES)


def test_compute_metrics_matches_functional() -> None:
    pred, target = torch.rand(4, 3, 24, 32), torch.rand(4, 3, 24, 32)
    mask = torch.zeros(4, 1, 24, 32)
    mask[:, :, 4:20, 4:28] = 1
    out = compute_metrics(pred, target, mask, metrics=("psnr", "ssim", "temporal_flickering"))
    assert list(out) == ["psnr", "psnr_masked", "ssim", "ssim_masked", "temporal_flickering"]
    assert out["psnr"] == pytest.approx(video_psnr(pred, target).item())
    assert out["ssim_masked"] == pytest.approx(video_ssim(pred, target, mask).item())
    assert 0 < out["temporal_flickering"] <= 100


def test_compute_metrics_errors() -> None:
    pred = torch.rand(3, 3, 16, 16)
    with pytest.raises(RecaptureError, match="target"):
        compute_metrics(pred, metrics="psnr")
    with pytest.raises(RecaptureError, match="mask"):
        compute_metrics(pred, pred, metrics="ssim_masked")
    with pytest.raises(RecaptureError, match="lpips_alexnet"):
        compute_metrics(pred, pred, metrics="lpips")
    with pytest.raises(RecaptureError, match="AMT-S"):
        compute_metrics(pred, metrics="motion_smoothness")
    with pytest.raises(RecaptureError, match="poses"):
        compute_metrics(pred, metrics="cammc")
    with pytest.raises(RecaptureError, match="unknown metric model"):
        MetricModels(raft=None)


def test_prebuilt_models_and_camera() -> None:
    video = torch.rand(1, 3, 16, 16).expand(5, -1, -1, -1)
    models = MetricModels(flow=lambda a, b: torch.zeros(1, 2, 16, 16))
    eye = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    out = compute_metrics(
        video, metrics="dynamic_degree,camera", fps=8, models=models, pred_c2w=eye, target_c2w=eye
    )
    assert out == {"dynamic_degree": 0.0, "rot_err": 0.0, "trans_err": 0.0, "cammc": 0.0}


def test_metric_set_merge_equals_one_pass() -> None:
    pred, target = torch.rand(3, 4, 3, 16, 16), torch.rand(3, 4, 3, 16, 16)
    total = MetricSet("psnr,ssim")
    for i in range(3):
        one = MetricSet("psnr,ssim")
        one.update(pred[i], target[i])
        total.merge(one)
    whole = MetricSet("psnr,ssim")
    whole.update(pred, target)
    assert total.compute() == pytest.approx(whole.compute())
