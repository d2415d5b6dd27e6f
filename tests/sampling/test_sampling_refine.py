"""SDEdit refinement: strength 0 is the identity, the temporal LoRA is really off, shared loop, errors."""

from __future__ import annotations

import pytest
import torch

from recapture.adaptation import encode_latents, set_active_adapters
from recapture.sampling import RefineConfig, SamplingConfig, generate, sdedit_refine
from recapture.sampling.loop import fresh_scheduler, partial_scheduler, strength_sigmas
from recapture.utils import RecaptureError

FRAMES = 3


def _refine(**kwargs) -> RefineConfig:
    return RefineConfig(**{"strength": 0.5, "num_inference_steps": 4, "seed": 1, **kwargs})


@pytest.mark.parametrize("strength, steps", [(0.0, 25), (0.0, 4)])
def test_strength_without_steps_is_the_identity(lora_components, image, video, strength, steps, monkeypatch):
    def no_vae(*args, **kwargs):
        raise AssertionError("the VAE must not run at strength 0")

    monkeypatch.setattr(lora_components.vae, "encode", no_vae)
    monkeypatch.setattr(lora_components.vae, "decode", no_vae)
    out = sdedit_refine(lora_components, video, image, _refine(strength=strength, num_inference_steps=steps))
    assert torch.equal(out.frames, video)
    assert out.frames.data_ptr() != video.data_ptr()  # a copy: editing it leaves the input alone
    assert out.latents is None and out.timings["steps"] == 0


def test_refinement_ignores_the_temporal_lora(lora_components, image, video, perturb):
    c = lora_components
    config = _refine()
    base = sdedit_refine(c, video, image, config, progress=False)
    assert base.timings["steps"] == 2
    assert not torch.allclose(base.frames, video, atol=1e-3)

    perturb(c, "temporal", seed=3)
    same = sdedit_refine(c, video, image, config, progress=False)
    assert torch.equal(same.latents, base.latents) and torch.equal(same.frames, base.frames)

    # Controls: the same perturbation matters when the temporal LoRA is active, and the spatial
    # LoRA's weights matter in refinement.
    both = sdedit_refine(c, video, image, _refine(adapters=["spatial", "temporal"]), progress=False)
    assert (both.latents - base.latents).abs().max() > 1e-3
    perturb(c, "spatial", seed=4)
    changed = sdedit_refine(c, video, image, config, progress=False)
    assert (changed.latents - base.latents).abs().max() > 1e-3
    # Refinement left both adapters active for whoever runs next.
    assert sorted(c.unet.active_adapters()) == ["spatial", "temporal"]


def test_refinement_from_full_strength_and_determinism(lora_components, image, video):
    a = sdedit_refine(lora_components, video, image, _refine(strength=1.0), progress=False)
    b = sdedit_refine(lora_components, video, image, _refine(strength=1.0), progress=False)
    assert a.timings["steps"] == 4 and torch.equal(a.frames, b.frames)
    assert a.frames.shape == video.shape and a.latents.shape == (FRAMES, 4, 4, 4)


def test_refinement_starts_from_the_noised_video_latents(lora_components, image, video, monkeypatch):
    """The loop starts from the encoded video plus sigma(1 - s) * noise and runs round(s * steps) steps."""
    import recapture.sampling.sampler as gen_module

    seen = {}

    def spy(unet, scheduler, latents, cond, first_step, progress, desc):
        seen.update(latents=latents.clone(), first_step=first_step, desc=desc)
        return latents

    monkeypatch.setattr(gen_module, "denoise", spy)
    config = _refine(strength=0.5, num_inference_steps=10, max_guidance_scale=1.0)
    sdedit_refine(lora_components, video, image, config, progress=False)
    assert seen["first_step"] == 0 and seen["desc"] == "refine"
    sigma = strength_sigmas(0.002, 700.0, 0.5, 10)[0]
    clean = encode_latents(lora_components.vae, video)
    noise = (seen["latents"][0] - clean) / sigma
    assert abs(noise.std().item() - 1) < 0.3 and abs(noise.mean().item()) < 0.3
    # The noise comes after the prompt noise from the seeded generator, as in generation.
    gen = torch.Generator().manual_seed(config.seed)
    torch.randn((1, 3, 32, 32), generator=gen)
    expected = torch.randn((1, FRAMES, 4, 4, 4), generator=gen)[0]
    torch.testing.assert_close(noise, expected, rtol=1e-3, atol=1e-3)


def test_refine_after_generate_with_both_adapters(lora_components, image):
    """The paper's stage 3: generate with both LoRAs, refine with the spatial one; state kept."""
    set_active_adapters(lora_components.unet, ["spatial", "temporal"])
    generated = generate(
        lora_components, image, FRAMES, SamplingConfig(num_inference_steps=2), progress=False
    )
    refined = sdedit_refine(lora_components, generated.frames, image, _refine(), progress=False)
    assert refined.frames.shape == generated.frames.shape
    assert sorted(lora_components.unet.active_adapters()) == ["spatial", "temporal"]


@pytest.mark.parametrize("strength", [-0.01, 1.01, 3.0])
def test_bad_strength(strength):
    with pytest.raises(RecaptureError, match=r"strength must be in \[0, 1\].*got " + str(strength)):
        RefineConfig(strength=strength)


def test_input_errors(lora_components, image, video):
    c = lora_components
    with pytest.raises(RecaptureError, match=r"video must be \(T, 3, H, W\)"):
        sdedit_refine(c, video[0], image, _refine())
    with pytest.raises(RecaptureError, match=r"video must be \(T, 3, H, W\) = \(3, 3, 64, 64\)"):
        sdedit_refine(c, video, torch.rand(3, 64, 64), _refine())
    with pytest.raises(RecaptureError, match=r"video must be \(T, 3, H, W\)"):
        sdedit_refine(c, video[:, :1], image, _refine())
    with pytest.raises(RecaptureError, match=r"video must be in \[0, 1\]"):
        sdedit_refine(c, video * 255, image, _refine())
    with pytest.raises(RecaptureError, match="unknown adapter"):
        sdedit_refine(c, video, image, _refine(adapters=["spatail"]))
    config = _refine()
    config.strength = -1.0
    with pytest.raises(RecaptureError, match="strength"):
        sdedit_refine(c, video, image, config)


@pytest.mark.parametrize("strength", [0.1, 0.3, 0.5, 0.9])
def test_strength_means_the_same_noise_level_for_any_step_count(lora_components, strength):
    """Strength 0.3 with 4 steps once started at sigma 0.002 and with 25 steps at 0.68: now both at sigma(0.7)."""
    cpu = torch.device("cpu")
    starts = {n: float(partial_scheduler(lora_components.scheduler, strength, n, cpu).sigmas[0]) for n in (4, 10, 25, 50)}
    # analytic: the Karras curve (rho 7) between SVD's sigma_min 0.002 and sigma_max 700 at u = 1 - strength
    expected = (700.0 ** (1 / 7) + (1 - strength) * (0.002 ** (1 / 7) - 700.0 ** (1 / 7))) ** 7
    for n, start in starts.items():
        assert start == pytest.approx(expected, rel=1e-5), n
        sched = partial_scheduler(lora_components.scheduler, strength, n, cpu)
        assert len(sched.timesteps) == max(1, round(strength * n))
        assert float(sched.sigmas[-1]) == 0.0
        if len(sched.timesteps) > 1:  # a one-step run goes straight from the start to 0
            assert float(sched.sigmas[-2]) == pytest.approx(0.002, rel=1e-4)
        torch.testing.assert_close(sched.timesteps, 0.25 * sched.sigmas[:-1].log())


def test_full_strength_is_exactly_the_full_schedule(lora_components):
    cpu = torch.device("cpu")
    for n in (4, 25):
        full = fresh_scheduler(lora_components.scheduler, n, cpu)
        partial = partial_scheduler(lora_components.scheduler, 1.0, n, cpu)
        assert torch.equal(full.sigmas, partial.sigmas) and torch.equal(full.timesteps, partial.timesteps)
