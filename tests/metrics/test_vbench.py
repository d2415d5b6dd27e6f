"""VBench dimensions: formulas on analytic cases and tiny random backbones built from config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, ViTModel

from recapture.metrics import (
    AestheticQuality,
    BackgroundConsistency,
    DynamicDegree,
    MotionSmoothness,
    ObjectClass,
    SubjectConsistency,
    TemporalFlickering,
)
from recapture.metrics import vbench as vb
from recapture.metrics.backbones import (
    AestheticScorer,
    ClipImageFeatures,
    DinoFeatures,
    load_aesthetic_head,
    load_grit,
    load_musiq,
)
from recapture.utils import RecaptureError


@pytest.fixture(scope="module")
def tiny_dino() -> DinoFeatures:
    torch.manual_seed(0)
    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    return DinoFeatures(ViTModel(cfg, add_pooling_layer=False), size=32)


@pytest.fixture(scope="module")
def tiny_clip() -> ClipImageFeatures:
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=16,
    )  # fmt: skip
    return ClipImageFeatures(CLIPVisionModelWithProjection(cfg), size=32)


def _static_video(t: int = 5, h: int = 40, w: int = 56) -> torch.Tensor:
    return torch.rand(1, 3, h, w).expand(t, -1, -1, -1).clone()


def test_consistency_formula_on_hand_features() -> None:
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    s = vb.consistency_scores(f)
    c = 2**-0.5
    # t=1: prev cos 0, first cos 0; t=2: prev c, first c; t=3: prev -c -> 0, first -1 -> 0
    assert torch.allclose(s, torch.tensor([0.0, c, 0.0], dtype=torch.float64), atol=1e-12)


def test_identical_frames_are_fully_consistent(tiny_dino, tiny_clip) -> None:
    video = _static_video()
    for extractor, cls in ((tiny_dino, SubjectConsistency), (tiny_clip, BackgroundConsistency)):
        metric = cls(extractor)
        metric.update(video)
        assert metric.compute().item() == pytest.approx(100.0, abs=1e-4)
    changing = torch.rand(4, 3, 40, 56)
    metric = SubjectConsistency(tiny_dino)
    metric.update(changing)
    assert metric.compute().item() < 100.0 - 1e-3


def test_consistency_aggregates_over_all_pairs(tiny_dino) -> None:
    a, b = torch.rand(3, 3, 32, 40), torch.rand(5, 3, 32, 40)
    metric = SubjectConsistency(tiny_dino)
    metric.update(a)
    metric.update(b)
    pairs = torch.cat([vb.feature_consistency(a, tiny_dino), vb.feature_consistency(b, tiny_dino)])
    assert metric.compute().item() == pytest.approx(100 * pairs.mean().item(), rel=1e-6)


def test_dino_preprocessing_resizes_shorter_side(tiny_dino) -> None:
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values, interpolate_pos_encoding):
            seen["shape"] = tuple(pixel_values.shape)
            return type("Out", (), {"last_hidden_state": torch.zeros(pixel_values.shape[0], 2, 4)})

    DinoFeatures(Spy(), size=224)(torch.rand(2, 3, 256, 384))
    assert seen["shape"] == (2, 3, 224, 336)


def test_temporal_flickering() -> None:
    metric = TemporalFlickering()
    metric.update(_static_video())
    assert metric.compute().item() == pytest.approx(100.0)
    # alternating between levels 100 and 110: MAE 10 -> (255 - 10) / 255
    video = torch.full((4, 3, 8, 8), 100 / 255)
    video[1::2] = 110 / 255
    assert vb.temporal_flickering(video) == pytest.approx(245 / 255, abs=1e-9)


def test_motion_smoothness() -> None:
    ramp = torch.linspace(0, 1, 9).view(9, 1, 1, 1).expand(9, 3, 8, 8)
    average = lambda a, b: (a + b) / 2  # noqa: E731  exact for a linear ramp
    metric = MotionSmoothness(average)
    metric.update(ramp)
    assert metric.compute().item() == pytest.approx(100.0, abs=0.3)  # 8-bit rounding only
    off = lambda a, b: (a + b) / 2 + 10 / 255  # noqa: E731
    video = torch.full((5, 3, 8, 8), 100 / 255)
    assert vb.motion_smoothness(video, off) == pytest.approx(245 / 255, abs=1e-9)
    with pytest.raises(RecaptureError, match="AMT-S"):
        vb.motion_smoothness(video, None)


@pytest.mark.parametrize(
    ("fps", "step"), [(24, 3), (8, 1), (30, 4), (4, 1), (20, 2), (25, 3), (60, 8), (3, 1)]
)
def test_dynamic_degree_sampling_follows_fps_rule(fps: float, step: int) -> None:
    assert vb.dynamic_degree_indices(25, fps) == list(range(0, 25, step))


def test_dynamic_degree_thresholds_and_decision() -> None:
    assert vb.dynamic_thresholds(256, 384, 16) == (6.0, 4)
    assert vb.dynamic_thresholds(512, 512, 9) == (12.0, 2)  # round(2.25) = 2
    assert vb.dynamic_thresholds(256, 256, 16, fps=4, low_fps_factor=True) == (12.0, 4)

    flow = torch.zeros(1, 2, 20, 20)
    flow[0, 0, :2, :] = 3.0  # 40 pixels of magnitude 3, top 5% = 20 pixels
    flow[0, 1, :2, :] = 4.0
    assert vb.flow_score(flow) == pytest.approx(5.0)

    calls = []

    def moving(a, b):  # magnitude 6 * 2 = 12 px > 6 * 64/256 = 1.5
        calls.append(a.shape)
        return torch.full((1, 2, a.shape[-2], a.shape[-1]), 12.0 / 2**0.5)

    still = lambda a, b: torch.zeros(1, 2, a.shape[-2], a.shape[-1])  # noqa: E731
    video = torch.rand(48, 3, 64, 96)
    metric = DynamicDegree(moving, fps=24)
    metric.update(video)
    metric.update(video, fps=24)
    dyn = DynamicDegree(still, fps=24)
    dyn.update(video)
    metric.merge_state(dyn)
    assert metric.compute().item() == pytest.approx(100 * 2 / 3)
    # 48 frames at 24 fps -> every 3rd frame -> 16 frames, needs round(4*16/16) = 4 moving pairs: stops early
    assert len(calls) == 2 * 4
    with pytest.raises(RecaptureError, match="fps"):
        vb.dynamic_degree(video, None, moving)
    with pytest.raises(RecaptureError, match="RAFT"):
        vb.dynamic_degree(video, 24, None)


def test_aesthetic_quality_with_random_head(tiny_clip, tmp_path: Path) -> None:
    head = torch.nn.Linear(16, 1)
    torch.save(head.state_dict(), tmp_path / "sa_0_4_vit_l_14_linear.pth")
    scorer = AestheticScorer(tiny_clip, load_aesthetic_head(tmp_path / "sa_0_4_vit_l_14_linear.pth"))
    video = torch.rand(3, 3, 40, 48)
    emb = torch.nn.functional.normalize(tiny_clip(vb._frames(video)), dim=-1)
    expected = head(emb).mean().item() / 10
    metric = AestheticQuality(scorer)
    metric.update(video)
    assert metric.compute().item() == pytest.approx(100 * expected, rel=1e-5)


def test_imaging_quality_caps_the_longer_side() -> None:
    sizes = []

    def musiq(frame):
        sizes.append(tuple(frame.shape[-2:]))
        return torch.tensor([50.0])

    assert vb.imaging_quality(torch.rand(2, 3, 300, 1024), musiq) == pytest.approx(0.5)
    assert sizes == [(150, 512)] * 2
    assert vb.imaging_quality(torch.rand(1, 3, 64, 80), musiq) == pytest.approx(0.5)
    assert sizes[-1] == (64, 80)


def test_object_class_counts_frames() -> None:
    answers = iter([{"dog"}, {"cat"}, {"dog", "person"}, set()])
    metric = ObjectClass(lambda frame: next(answers), class_name="dog")
    metric.update(torch.rand(4, 3, 8, 8))
    assert metric.compute().item() == pytest.approx(50.0)


def test_missing_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(RecaptureError, match="sa_0_4_vit_l_14_linear"):
        load_aesthetic_head(tmp_path / "missing.pth")
    with pytest.raises(RecaptureError, match="musiq_spaq"):
        load_musiq(tmp_path / "missing.pth")
    with pytest.raises(RecaptureError, match="grit_b_densecap"):
        load_grit(tmp_path / "missing.pth")
    (tmp_path / "grit.pth").write_bytes(b"")
    try:
        import vbench  # noqa: F401
    except ImportError:
        with pytest.raises(RecaptureError, match="vbench"):
            load_grit(tmp_path / "grit.pth")
