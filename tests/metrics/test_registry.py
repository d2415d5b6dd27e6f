"""One registry: names, aliases, models and weight fields all come from register_metric / register_model."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from recapture.metrics import METRIC_NAMES, MetricModels, MetricSet, MetricWeights, compute_metrics, registry
from recapture.metrics.common import VideoMeanMetric, as_video_batch


def test_every_weight_field_belongs_to_exactly_one_model() -> None:
    claimed = [f for spec in registry.MODELS.values() for f in spec.fields]
    assert sorted(claimed) == sorted(f.name for f in fields(MetricWeights) if f.name != "device")


def test_every_metric_needs_a_registered_model_and_names_are_unique() -> None:
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
    for spec in registry.METRICS:
        assert spec.model is None or spec.model in registry.MODELS, spec.outputs
    assert METRIC_NAMES[:6] == ("psnr", "ssim", "lpips", "psnr_masked", "ssim_masked", "lpips_masked")
    assert registry.aliases()["camera"] == ("rot_err", "trans_err", "cammc")


def test_unset_weight_fields_of_a_model() -> None:
    assert MetricModels().unset("lpips") == ["lpips_alexnet", "lpips_lin"]
    assert MetricModels(MetricWeights(lpips_alexnet="a.pth")).unset("lpips") == ["lpips_lin"]
    assert MetricModels().unset("dino") == []


def test_a_metric_registered_in_its_module_is_usable_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "METRICS", list(registry.METRICS))
    monkeypatch.setitem(registry.MODELS, "toy", registry.ModelSpec("toy", lambda w: 2.0, ()))

    @registry.register_metric("toy_brightness", model="toy", aliases=("toys",))
    class Brightness(VideoMeanMetric):
        def __init__(self, scale: float, **kwargs) -> None:
            super().__init__(**kwargs)
            self.scale = scale

        def update(self, video: torch.Tensor) -> None:
            self._add_videos(as_video_batch(video, "video").mean(dim=(1, 2, 3, 4)))

    video = torch.full((3, 3, 8, 8), 0.25)
    assert compute_metrics(video, metrics="toys,temporal_flickering")["toy_brightness"] == pytest.approx(0.5)
    assert "toy_brightness" in registry.describe()
    assert MetricSet("toy_brightness").inputs == {"pred"}
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_metric("toy_brightness")(Brightness)
