"""EDM objective: sampler parity, pipeline-equal conditioning, masked loss invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from recapture.adaptation import (
    EDMConfig,
    added_time_ids,
    edm_loss,
    edm_scalings,
    encode_condition,
    encode_latents,
    mask_to_latent,
    sample_sigma,
    svd_scheduler,
)
from recapture.utils import RecaptureError


def test_scalings_match_the_svd_scheduler() -> None:
    scheduler = svd_scheduler()
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    for i in (0, 4, 9):
        t = scheduler.timesteps[i]
        sigma = scheduler.sigmas[i].reshape(1)
        c_in, c_skip, c_out, c_noise, weight = edm_scalings(sigma)
        torch.testing.assert_close(c_noise, t.reshape(1).float(), rtol=1e-5, atol=1e-6)
        sample = torch.randn(1, 2, 4, 3, 3, generator=g)
        model_out = torch.randn(1, 2, 4, 3, 3, generator=g)
        scheduler._step_index = None
        torch.testing.assert_close(scheduler.scale_model_input(sample, t), c_in * sample)
        denoised = scheduler.step(model_out, t, sample).pred_original_sample
        torch.testing.assert_close(denoised, c_skip * sample + c_out * model_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(weight, (sigma**2 + 1) / sigma**2)
    # EDM identity: lambda * c_out^2 = 1 (unit loss weight on the network output).
    s = torch.tensor([0.01, 1.0, 80.0])
    _, _, c_out, _, weight = edm_scalings(s)
    torch.testing.assert_close(weight * c_out**2, torch.ones(3))


def test_sample_sigma_is_lognormal() -> None:
    sigma = sample_sigma(20000, EDMConfig(p_mean=0.7, p_std=1.6), torch.Generator().manual_seed(0))
    assert abs(sigma.log().mean().item() - 0.7) < 0.05
    assert abs(sigma.log().std().item() - 1.6) < 0.05


def test_added_time_ids_match_pipeline(tiny) -> None:
    pipe = tiny.to_pipeline()
    expected = pipe._get_add_time_ids(7 - 1, 127, 0.02, torch.float32, 3, 1, False)
    torch.testing.assert_close(added_time_ids(7, 127, 0.02, 3), expected)


def test_one_micro_conditioning_for_training_and_sampling() -> None:
    """EDMConfig and the sampling configs hold the same MicroConditioning fields, flat (the YAML keys)."""
    from dataclasses import fields

    from recapture.adaptation.objective import MicroConditioning
    from recapture.sampling import RefineConfig, SamplingConfig

    names = [f.name for f in fields(MicroConditioning)]
    assert names == ["fps", "motion_bucket_id", "noise_aug_strength"]
    for cls in (EDMConfig, SamplingConfig, RefineConfig):
        assert issubclass(cls, MicroConditioning) and {f.name for f in fields(cls)} >= set(names)
    objective = EDMConfig(fps=12, motion_bucket_id=60, noise_aug_strength=0.05)
    assert objective.micro == MicroConditioning(12, 60, 0.05) == SamplingConfig(fps=12, motion_bucket_id=60,
                                                                                 noise_aug_strength=0.05).micro
    assert type(objective.micro) is MicroConditioning
    torch.testing.assert_close(objective.time_ids(2), added_time_ids(12, 60, 0.05, 2))
    ids = objective.time_ids(1, device="cpu", dtype=torch.float64)
    assert ids.dtype == torch.float64 and torch.equal(ids, added_time_ids(12, 60, 0.05, 1, dtype=torch.float64))
    with pytest.raises(RecaptureError, match="fps must be >= 1"):
        EDMConfig(fps=0)
    with pytest.raises(RecaptureError, match="noise_aug_strength must be >= 0"):
        MicroConditioning(noise_aug_strength=-0.1)


def test_encode_condition_matches_pipeline(tiny) -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    image = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    cond = encode_condition(tiny.vae, tiny.image_encoder, image, 0.02, torch.Generator().manual_seed(3))
    pipe = tiny.to_pipeline()
    with torch.no_grad():
        embeds = pipe._encode_image(Image.fromarray(array), "cpu", 1, False)
        pre = pipe.video_processor.preprocess(Image.fromarray(array), height=64, width=64)
        noise = torch.randn(pre.shape, generator=torch.Generator().manual_seed(3))
        latents = pipe._encode_vae_image(pre + 0.02 * noise, "cpu", 1, False)
    assert cond.cond_latents.shape == (1, 4, 8, 8) and cond.image_embeds.shape == (1, 1, 32)
    torch.testing.assert_close(cond.image_embeds, embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cond.cond_latents, latents, rtol=1e-5, atol=1e-5)


def test_encode_latents_is_scaled_mode_and_chunked(tiny) -> None:
    frames = torch.rand(5, 3, 64, 64)
    z = encode_latents(tiny.vae, frames, chunk_size=2)
    with torch.no_grad():
        ref = tiny.vae.encode(frames * 2 - 1).latent_dist.mode() * tiny.vae.config.scaling_factor
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(RecaptureError, match="multiple"):
        encode_latents(tiny.vae, torch.rand(2, 3, 60, 64))


def test_mask_to_latent() -> None:
    mask = torch.ones(2, 1, 16, 24)
    mask[0, :, 0, 0] = 0  # one invalid pixel in cell (0, 0) of frame 0
    mask[1, :, 8:, 8:12] = 0  # half of cell (1, 1) of frame 1
    strict = mask_to_latent(mask, 8)
    assert strict.shape == (2, 1, 2, 3)
    assert strict[0, 0, 0, 0] == 0 and strict[0].sum() == 5
    assert strict[1, 0, 1, 1] == 0 and strict[1].sum() == 5
    half = mask_to_latent(mask.bool(), 8, threshold=0.5)
    assert half[1, 0, 1, 1] == 1 and half[0, 0, 0, 0] == 1
    batched = mask_to_latent(mask[None], 8)
    assert batched.shape == (1, 2, 1, 2, 3) and torch.equal(batched[0], strict)
    with pytest.raises(RecaptureError, match=r"\(\.\.\., 1, H, W\)"):
        mask_to_latent(torch.ones(2, 16, 24), 8)
    with pytest.raises(RecaptureError, match="threshold"):
        mask_to_latent(mask, 8, threshold=0.0)


class _AffineUNet(torch.nn.Module):
    """Stand-in denoiser: output = a * first 4 input channels + b * cond channels, per-channel bias."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.3))
        self.b = torch.nn.Parameter(torch.tensor(-0.2))

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False):  # noqa: ANN001, ANN201
        out = (
            self.a * sample[:, :, :4]
            + self.b * sample[:, :, 4:]
            + encoder_hidden_states.mean()
            + timestep.view(-1, 1, 1, 1, 1)
        )
        return (out,)


def test_loss_value_is_the_edm_formula() -> None:
    g = torch.Generator().manual_seed(0)
    z0, cond = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(2, 4, 2, 2, generator=g)
    emb, ids = torch.randn(2, 1, 8, generator=g), added_time_ids(7, 127, 0.02, 2)
    sigma = torch.tensor([0.5, 3.0])
    unet = _AffineUNet()
    out = edm_loss(
        unet,
        z0,
        cond,
        emb,
        ids,
        sigma=sigma,
        generator=torch.Generator().manual_seed(7),
        drop_conditioning=torch.tensor([False, True]),
    )
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(7))
    # The embedding mean is over the whole (partly dropped) batch; recompute it exactly.
    emb_mean = (emb * torch.tensor([1.0, 0.0]).view(2, 1, 1)).mean().item()
    expected = []
    for i, s in enumerate(sigma.tolist()):
        noisy = z0[i] + s * eps[i]
        c_in, c_skip, c_out = 1 / math.sqrt(s * s + 1), 1 / (s * s + 1), -s / math.sqrt(s * s + 1)
        keep = 0.0 if i == 1 else 1.0
        f = 0.3 * c_in * noisy - 0.2 * keep * cond[i] + emb_mean + 0.25 * math.log(s)
        expected.append(((s * s + 1) / (s * s)) * ((c_skip * noisy + c_out * f) - z0[i]) ** 2)
    expected = torch.stack(expected)
    torch.testing.assert_close(out.per_element, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, expected.mean(), rtol=1e-5, atol=1e-6)
    assert out.dropped.tolist() == [False, True]


def _loss_batch(tiny, seed: int = 0) -> dict:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    b, t = 2, 3
    return {
        "latents": torch.randn(b, t, 4, 8, 8, generator=g),
        "cond_latents": torch.randn(b, 4, 8, 8, generator=g),
        "image_embeds": torch.randn(b, 1, 32, generator=g),
        "time_ids": added_time_ids(7, 127, 0.02, b),
    }


def _loss_and_grads(unet, batch, mask, seed=11):  # noqa: ANN001, ANN202
    unet.zero_grad(set_to_none=True)
    out = edm_loss(
        unet,
        **batch,
        mask=mask,
        config=EDMConfig(conditioning_dropout=0.5),
        generator=torch.Generator().manual_seed(seed),
    )
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}


def test_masked_out_content_changes_neither_loss_nor_gradients(tiny) -> None:
    unet = tiny.unet.train()
    batch = _loss_batch(tiny)
    mask = torch.ones(2, 3, 1, 8, 8)
    mask[:, 1:, :, 2:6, 3:8] = 0  # a hole on frames 1-2
    mask[1, 0, :, :, :2] = 0
    loss_a, grads_a = _loss_and_grads(unet, batch, mask)
    changed = dict(batch)
    changed["latents"] = torch.where(mask.bool(), batch["latents"], torch.randn_like(batch["latents"]) * 5)
    loss_b, grads_b = _loss_and_grads(unet, changed, mask)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    # Changing a valid latent does change the loss (the check above is not vacuous).
    valid_changed = dict(batch)
    valid_changed["latents"] = batch["latents"].clone()
    valid_changed["latents"][0, 0, :, 0, 0] += 1.0
    loss_c, _ = _loss_and_grads(unet, valid_changed, mask)
    assert not torch.equal(loss_a, loss_c)


def test_all_valid_mask_equals_unmasked_loss(tiny) -> None:
    unet = tiny.unet
    batch = _loss_batch(tiny, seed=1)
    with torch.no_grad():
        ones = edm_loss(
            unet, **batch, mask=torch.ones(2, 3, 1, 8, 8), generator=torch.Generator().manual_seed(2)
        )
        plain = edm_loss(unet, **batch, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ones.loss, plain.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(ones.sigma, plain.sigma)


def test_masked_loss_is_the_mean_over_valid_elements(tiny) -> None:
    batch = _loss_batch(tiny, seed=2)
    mask = (torch.rand(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.4).float()
    with torch.no_grad():
        out = edm_loss(tiny.unet, **batch, mask=mask, generator=torch.Generator().manual_seed(4))
    expected = out.per_element[mask.expand_as(out.per_element).bool()].mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=0)


def test_conditioning_dropout_zeroes_both_conditions(tiny) -> None:
    batch = _loss_batch(tiny, seed=3)
    zeroed = dict(
        batch,
        cond_latents=torch.zeros_like(batch["cond_latents"]),
        image_embeds=torch.zeros_like(batch["image_embeds"]),
    )
    sigma = torch.tensor([1.0, 2.0])
    with torch.no_grad():
        dropped = edm_loss(
            tiny.unet,
            **batch,
            sigma=sigma,
            generator=torch.Generator().manual_seed(5),
            drop_conditioning=torch.tensor([True, True]),
        )
        ref = edm_loss(
            tiny.unet,
            **zeroed,
            sigma=sigma,
            generator=torch.Generator().manual_seed(5),
            drop_conditioning=torch.tensor([False, False]),
        )
        kept = edm_loss(
            tiny.unet,
            **batch,
            sigma=sigma,
            generator=torch.Generator().manual_seed(5),
            drop_conditioning=torch.tensor([False, False]),
        )
    assert torch.equal(dropped.per_element, ref.per_element)
    assert not torch.equal(dropped.per_element, kept.per_element)
    drawn = edm_loss(tiny.unet, **batch, config=EDMConfig(conditioning_dropout=1.0))
    assert drawn.dropped.all()


def test_loss_bad_input(tiny) -> None:
    batch = _loss_batch(tiny)
    with pytest.raises(RecaptureError, match="no valid latent"):
        edm_loss(tiny.unet, **batch, mask=torch.zeros(2, 3, 1, 8, 8))
    with pytest.raises(RecaptureError, match=r"mask must have shape \(2, 3, 1, 8, 8\)"):
        edm_loss(tiny.unet, **batch, mask=torch.ones(2, 3, 8, 8))
    with pytest.raises(RecaptureError, match="cond_latents"):
        edm_loss(tiny.unet, **dict(batch, cond_latents=torch.zeros(2, 3, 4, 8, 8)))
    with pytest.raises(RecaptureError, match=r"latents must have shape \(B, T, C, h, w\)"):
        edm_loss(tiny.unet, **dict(batch, latents=torch.zeros(3, 4, 8, 8)))
