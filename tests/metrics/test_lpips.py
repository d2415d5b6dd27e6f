"""LPIPS plumbing: random AlexNet + heads saved with the published key names, loaded back, recipe checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recapture.metrics import LPIPS, VideoLPIPS, load_lpips, lpips_frames, video_lpips
from recapture.metrics.lpips import ALEXNET_URL
from recapture.utils import RecaptureError

CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}


@pytest.fixture
def weight_files(tmp_path: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """Random weights under torchvision's alexnet keys (classifier included) and lpips' alex.pth keys."""
    g = torch.Generator().manual_seed(0)
    alex = {}
    for i, (co, ci, k) in CONVS.items():
        alex[f"features.{i}.weight"] = torch.randn(co, ci, k, k, generator=g) * (2.0 / (ci * k * k)) ** 0.5
        alex[f"features.{i}.bias"] = torch.randn(co, generator=g) * 0.01
    alex["classifier.1.weight"] = torch.randn(8, 4, generator=g)  # ignored by the loader
    alex["classifier.1.bias"] = torch.randn(8, generator=g)
    lins = {
        f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
        for k, c in enumerate((64, 192, 384, 256, 256))
    }
    torch.save(alex, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(lins, tmp_path / "alex.pth")
    return tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth", {**alex, **lins}


def _reference_lpips(w: dict[str, torch.Tensor], x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """LPIPS v0.1 written out with functional ops (inputs in [0, 1])."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x * 2 - 1) - shift) / scale
        out = []
        x = F.relu(F.conv2d(x, w["features.0.weight"], w["features.0.bias"], stride=4, padding=2))
        out.append(x)
        x = F.max_pool2d(x, 3, 2)
        x = F.relu(F.conv2d(x, w["features.3.weight"], w["features.3.bias"], padding=2))
        out.append(x)
        x = F.max_pool2d(x, 3, 2)
        for i in (6, 8, 10):
            x = F.relu(F.conv2d(x, w[f"features.{i}.weight"], w[f"features.{i}.bias"], padding=1))
            out.append(x)
        return out

    total = 0
    for k, (a, b) in enumerate(zip(feats(x0), feats(x1), strict=True)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + ((a - b) ** 2 * w[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
    return total


def test_state_dict_keys_match_published_files() -> None:
    keys = set(LPIPS().state_dict())
    assert {f"net.features.{i}.weight" for i in CONVS} <= keys
    assert {f"lin{k}.model.1.weight" for k in range(5)} <= keys


def test_loaded_lpips_matches_reference(weight_files) -> None:
    alex_path, lin_path, w = weight_files
    model = load_lpips(alex_path, lin_path)
    x0, x1 = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    ours = model(x0, x1)
    assert ours.shape == (3,)
    assert torch.allclose(ours, _reference_lpips(w, x0, x1), rtol=1e-4, atol=1e-6)
    assert torch.allclose(model(x0, x0), torch.zeros(3), atol=1e-6)
    model.train()  # dropout in the heads must not change scores
    assert torch.allclose(model(x0, x1), ours)


def test_masked_lpips_follows_dycheck(weight_files) -> None:
    model = load_lpips(*weight_files[:2])
    x0, x1 = torch.rand(2, 3, 48, 64), torch.rand(2, 3, 48, 64)
    mask = torch.zeros(2, 1, 48, 64)
    mask[:, :, 10:40, 5:50] = 1
    mask[1] = 0
    values = lpips_frames(model, x0, x1, mask)
    spatial = model(x0[:1] * mask[:1], x1[:1] * mask[:1], spatial=True)
    assert values[0].item() == pytest.approx(
        (spatial * mask[:1]).sum().item() / mask[:1].sum().item(), rel=1e-5
    )
    assert torch.isnan(values[1])
    # all-ones mask: mean of the spatial map
    ones = lpips_frames(model, x0, x1, torch.ones(2, 1, 48, 64))
    assert torch.allclose(ones.float(), model(x0, x1, spatial=True).mean(dim=(1, 2, 3)), rtol=1e-5)


def test_video_lpips_and_metric(weight_files) -> None:
    model = load_lpips(*weight_files[:2])
    pred, target = torch.rand(2, 3, 3, 32, 32), torch.rand(2, 3, 3, 32, 32)
    per_video = video_lpips(model, pred, target)
    assert per_video.shape == (2,)
    assert per_video[1].item() == pytest.approx(model(pred[1], target[1]).mean().item(), rel=1e-6)
    metric = VideoLPIPS(model)
    metric.update(pred, target)
    assert metric.compute().item() == pytest.approx(per_video.mean().item(), rel=1e-6)


def test_missing_or_wrong_weight_files(tmp_path: Path, weight_files) -> None:
    alex_path, lin_path, _ = weight_files
    with pytest.raises(RecaptureError, match=ALEXNET_URL.replace(".", r"\.")):
        load_lpips(tmp_path / "nope.pth", lin_path)
    with pytest.raises(RecaptureError, match=r"alex\.pth"):
        load_lpips(alex_path, None)
    with pytest.raises(RecaptureError, match="not torchvision's alexnet"):
        load_lpips(lin_path, lin_path)
    with pytest.raises(RecaptureError, match="not the LPIPS v0.1"):
        load_lpips(alex_path, alex_path)
