"""Generation: parity with the stock diffusers pipeline, determinism, adapters, anchor start, errors."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from recapture.adaptation import (
    LoRAConfig,
    add_recapture_adapters,
    build_tiny_components,
    encode_latents,
    set_active_adapters,
    set_trainable_adapter,
)
from recapture.sampling import SamplingConfig, generate
from recapture.utils import RecaptureError

SIZE = 32
FRAMES = 3


def _fast(**kwargs) -> SamplingConfig:
    return SamplingConfig(**{"num_inference_steps": 2, "max_guidance_scale": 2.0, "seed": 5, **kwargs})


def _pil_prompt(size: int) -> tuple[PIL.Image.Image, torch.Tensor]:
    """A PIL prompt for the pipeline and the same image as a (3, H, W) tensor (uint8-exact)."""
    rng = np.random.default_rng(0)
    pil = PIL.Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize((size, size))
    tensor = torch.from_numpy(np.array(pil).astype(np.float32) / 255.0).permute(2, 0, 1)
    return pil, tensor


@pytest.mark.parametrize(
    "min_g, max_g", [(1.0, 1.0), (1.0, 2.5), (1.5, 3.0)], ids=["no-cfg", "ramp", "ramp-up"]
)
def test_generate_matches_stock_pipeline(tiny, min_g, max_g):
    pil, image = _pil_prompt(64)
    config = SamplingConfig(
        num_inference_steps=3,
        min_guidance_scale=min_g,
        max_guidance_scale=max_g,
        seed=3,
        fps=9,
        motion_bucket_id=60,
        noise_aug_strength=0.05,
        decode_chunk_size=2,
    )
    ours = generate(tiny, image, FRAMES, config, adapters=None, progress=False)
    pipe = tiny.to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(
        height=64,
        width=64,
        num_frames=FRAMES,
        num_inference_steps=3,
        min_guidance_scale=min_g,
        max_guidance_scale=max_g,
        fps=9,
        motion_bucket_id=60,
        noise_aug_strength=0.05,
        decode_chunk_size=2,
    )
    ref = pipe(pil, generator=torch.Generator().manual_seed(3), output_type="latent", **kwargs).frames[0]
    # Only float rounding differs (the pipeline encodes a channels-last prompt tensor).
    torch.testing.assert_close(ours.latents, ref, rtol=1e-4, atol=1e-4)
    assert (ours.latents - ref).abs().max() < 1e-3 * ref.abs().max()
    if max_g == 2.5:
        frames = pipe(pil, generator=torch.Generator().manual_seed(3), output_type="pt", **kwargs).frames[0]
        torch.testing.assert_close(ours.frames, frames, rtol=1e-4, atol=1e-4)


def test_generate_is_deterministic_for_a_seed(tiny, image):
    a = generate(tiny, image, FRAMES, _fast(seed=1), adapters=None, progress=False)
    b = generate(tiny, image, FRAMES, _fast(seed=1), adapters=None, progress=False)
    c = generate(tiny, image, FRAMES, _fast(seed=2), adapters=None, progress=False)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.frames, b.frames)
    assert not torch.allclose(a.latents, c.latents, atol=1e-3)
    assert a.frames.shape == (FRAMES, 3, SIZE, SIZE) and a.latents.shape == (FRAMES, 4, SIZE // 8, SIZE // 8)
    assert a.frames.dtype == torch.float32 and 0 <= a.frames.min() and a.frames.max() <= 1
    assert a.timings["steps"] == 2 and a.timings["total_s"] >= a.timings["denoise_s"] > 0
    assert a.peak_memory_bytes is None  # CPU


def test_generate_uses_the_given_adapters_and_restores_state(lora_components, image):
    c = lora_components
    unet = c.unet
    set_active_adapters(unet, ["temporal"])
    set_trainable_adapter(unet, "temporal")
    unet.train()
    grads_before = [p.requires_grad for p in unet.parameters()]

    both = generate(c, image, FRAMES, _fast(), progress=False)
    spatial = generate(c, image, FRAMES, _fast(), adapters=["spatial"], progress=False)
    none = generate(c, image, FRAMES, _fast(), adapters=[], progress=False)
    as_is = generate(c, image, FRAMES, _fast(), adapters=None, progress=False)  # "temporal" only

    assert unet.active_adapters() == ["temporal"]
    assert [p.requires_grad for p in unet.parameters()] == grads_before
    assert unet.training and all(m.training for m in unet.modules())

    base = generate(build_tiny_components(seed=0), image, FRAMES, _fast(), adapters=None, progress=False)
    # all adapters off = the base model: the same arithmetic, equal up to float32 rounding (on
    # AVX-512 CPUs MKL may round a GEMM differently for weights at other addresses: 6e-5 seen after
    # two sampling steps); each adapter set moves the latents by far more (> 1.5 measured, > 0.1 below)
    torch.testing.assert_close(none.latents, base.latents, rtol=1e-4, atol=2e-4)
    outputs = [both.latents, spatial.latents, none.latents, as_is.latents]
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            assert float((outputs[i] - outputs[j]).abs().max()) > 0.1, (i, j)


def test_generate_temporal_lora_matters(lora_components, image, perturb):
    """Control for the refinement test: with both adapters active, the temporal weights change the output."""
    before = generate(lora_components, image, FRAMES, _fast(), progress=False)
    perturb(lora_components, "temporal", seed=9)
    after = generate(lora_components, image, FRAMES, _fast(), progress=False)
    assert (before.latents - after.latents).abs().max() > 1e-3


def test_anchor_strength_zero_returns_the_anchor_latents(tiny, image, video):
    out = generate(
        tiny, image, FRAMES, _fast(anchor_strength=0.0), anchor=video, adapters=None, progress=False
    )
    assert out.timings["steps"] == 0
    assert torch.equal(out.latents, encode_latents(tiny.vae, video, chunk_size=8))


def test_anchor_strength_small_stays_close_to_the_anchor(tiny, image, video):
    anchor_latents = encode_latents(tiny.vae, video)
    config = _fast(num_inference_steps=25, anchor_strength=0.04)  # the last step only
    out = generate(tiny, image, FRAMES, config, anchor=video, adapters=None, progress=False)
    assert out.timings["steps"] == 1
    assert (out.latents - anchor_latents).abs().max() < 0.05
    half = generate(
        tiny, image, FRAMES, _fast(anchor_strength=0.5), anchor=video, adapters=None, progress=False
    )
    noise = generate(tiny, image, FRAMES, _fast(), adapters=None, progress=False)
    assert half.timings["steps"] == 1 and not torch.allclose(half.latents, noise.latents, atol=1e-3)
    # The anchor is ignored without anchor_strength.
    ignored = generate(tiny, image, FRAMES, _fast(), anchor=video, adapters=None, progress=False)
    assert torch.equal(ignored.latents, noise.latents)


def test_adapters_on_a_unet_without_lora_is_a_clear_error(tiny, image):
    with pytest.raises(RecaptureError, match="no LoRA adapters.*adapters=None"):
        generate(tiny, image, FRAMES, _fast(), progress=False)


def test_unknown_adapter_name_is_a_clear_error(image):
    c = build_tiny_components(seed=0)
    add_recapture_adapters(c.unet, LoRAConfig(rank=2))
    with pytest.raises(RecaptureError, match="unknown adapter"):
        generate(c, image, FRAMES, _fast(), adapters=["motion"], progress=False)
    assert sorted(c.unet.active_adapters()) == ["spatial", "temporal"]


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bad_anchor_strength(value):
    with pytest.raises(RecaptureError, match=r"anchor_strength must be in \[0, 1\]"):
        SamplingConfig(anchor_strength=value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"decode_chunk_size": 0}, "decode_chunk_size"),
        ({"fps": 0}, "fps"),
        ({"noise_aug_strength": -1.0}, "noise_aug_strength"),
        ({"max_guidance_scale": -1.0}, "guidance"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(RecaptureError, match=match):
        SamplingConfig(**kwargs)


def test_shape_and_input_errors(tiny, image, video, make_video):
    def run(img=image, frames=FRAMES, anchor=None, **cfg):
        return generate(tiny, img, frames, _fast(**cfg), anchor=anchor, adapters=None, progress=False)

    with pytest.raises(RecaptureError, match=r"image must be \(3, H, W\)"):
        run(img=image[None])
    with pytest.raises(RecaptureError, match=r"image must be \(3, H, W\)"):
        run(img=image[:2])
    with pytest.raises(RecaptureError, match="multiple of the VAE factor 8"):
        run(img=torch.rand(3, 36, 32))
    with pytest.raises(RecaptureError, match=r"image must be in \[0, 1\]"):
        run(img=image * 2 - 1)
    with pytest.raises(RecaptureError, match="num_frames"):
        run(frames=0)
    with pytest.raises(
        RecaptureError, match=r"anchor must be \(T, 3, H, W\) = \(4, 3, 32, 32\).*\(3, 3, 32, 32\)"
    ):
        run(frames=4, anchor=video, anchor_strength=0.5)
    with pytest.raises(RecaptureError, match="anchor must be"):
        run(anchor=make_video(FRAMES, 64, 0), anchor_strength=0.5)
    with pytest.raises(RecaptureError, match="needs the anchor video"):
        run(anchor_strength=0.5)
    config = _fast()
    config.anchor_strength = 2.0  # mutated after construction: checked again at call time
    with pytest.raises(RecaptureError, match="anchor_strength"):
        generate(tiny, image, FRAMES, config, anchor=video, adapters=None, progress=False)
