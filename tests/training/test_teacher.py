"""The VAE stage's teacher: the plain autoencoder, its training, the distillation loss, and crop_steps."""

from __future__ import annotations

import pytest
import torch

from recapture.adaptation.prior import VAESize, vae_factor
from recapture.training.pretrain import VAEStage
from recapture.training.pretrain.teacher import PlainAutoencoder, distillation_loss, train_teacher
from recapture.utils import RecaptureError


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_the_teacher_has_the_vae_factor_and_latent_channels(levels: int) -> None:
    teacher = PlainAutoencoder(levels, latent=4, width=8, hidden=8)
    x = torch.randn(2, 3, 32, 48)
    z = teacher.encoder(x)
    factor = 2 ** (levels - 1)
    assert factor == vae_factor((32,) * levels)
    assert z.shape == (2, 4, 32 // factor, 48 // factor)
    assert teacher.decoder(z).shape == x.shape
    with pytest.raises(RecaptureError, match="levels=0"):
        PlainAutoencoder(0, 4)


def test_train_teacher_learns_a_fixed_batch_and_reports() -> None:
    torch.manual_seed(0)
    teacher = PlainAutoencoder(2, latent=4, width=8, hidden=8)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        before = float((teacher(x) - x).abs().mean())
    seen: list[int] = []
    last = train_teacher(teacher, iter(lambda: x, None), steps=200, warmup=5,
                         report=lambda step, loss: seen.append(step))
    assert last < 0.5 * before
    assert seen == [100, 200]
    assert not teacher.training


def test_distillation_trains_the_vae_only_toward_the_teachers_latents() -> None:
    vae = VAESize((32, 32)).build(0)
    teacher = PlainAutoencoder(2, latent=4, width=8, hidden=8).requires_grad_(False)
    frames = torch.rand(4, 3, 16, 16) * 2 - 1
    out = distillation_loss(vae, teacher, frames, num_frames=2, latent_weight=0.5)
    target = teacher.encoder(frames)
    with torch.no_grad():
        decoded = vae.decode(target, num_frames=2).sample
        mean = vae.encode(frames).latent_dist.mean
    assert float(out.reconstruction) == pytest.approx(float((decoded - frames).abs().mean()), rel=1e-5)
    assert float(out.latent) == pytest.approx(float((mean - target).square().mean()), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(out.reconstruction + 0.5 * out.latent), rel=1e-6)
    assert not (out.reconstruction.requires_grad or out.latent.requires_grad or out.decoded.requires_grad)
    out.loss.backward()
    # both halves of the VAE learn (the decoder from the reconstruction, the encoder from the regression)
    assert vae.decoder.conv_in.weight.grad is not None and vae.encoder.conv_in.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_crop_steps_switch_to_whole_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    stage = VAEStage(vae=VAESize((32, 32)), train_crop=(8, 16), crop_steps=3)
    video = torch.rand(1, 2, 3, 16, 32)
    step = {"now": 0}
    monkeypatch.setattr(VAEStage, "global_step", property(lambda self: step["now"]))
    assert stage.crop(video).shape[-2:] == (8, 16)
    step["now"] = 3
    assert stage.crop(video) is video
    assert VAEStage(vae=VAESize((32, 32)), train_crop=(8, 16)).crop(video).shape[-2:] == (8, 16)  # crops throughout
    with pytest.raises(RecaptureError, match="crop_steps=5 must be >= 0 and needs model.train_crop"):
        VAEStage(vae=VAESize((32, 32)), crop_steps=5)
    with pytest.raises(RecaptureError, match="distilling needs a teacher"):
        VAEStage(vae=VAESize((32, 32)), distill_steps=5)
    with pytest.raises(RecaptureError, match="teacher_pool=0"):
        VAEStage(vae=VAESize((32, 32)), teacher_steps=5, teacher_pool=0)
