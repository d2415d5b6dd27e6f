"""Decoding in chunks, memory options (offload hooks, feed-forward chunking), progress output."""

from __future__ import annotations

import logging

import pytest
import torch

from recapture.sampling import SamplingConfig, decode_latents, generate
from recapture.sampling.session import feed_forward_chunking, model_offload
from recapture.utils import RecaptureError

FRAMES = 3


def _fast(**kwargs) -> SamplingConfig:
    return SamplingConfig(**{"num_inference_steps": 2, "max_guidance_scale": 2.0, "seed": 5, **kwargs})


@pytest.mark.parametrize("chunk", [1, 2, 8])
def test_decode_latents_matches_the_pipeline(tiny, chunk):
    latents = torch.randn(FRAMES, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    ours = decode_latents(tiny.vae, latents, FRAMES, chunk)
    ref = tiny.to_pipeline().decode_latents(latents[None], FRAMES, chunk)  # (1, C, T, H, W) in [-1, 1]
    expected = (ref[0].permute(1, 0, 2, 3) / 2 + 0.5).clamp(0, 1)
    assert ours.shape == (FRAMES, 3, 32, 32)
    assert torch.equal(ours, expected)


def test_decode_chunks_are_decoded_separately(tiny):
    latents = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    whole = decode_latents(tiny.vae, latents, 4, 4)
    halves = decode_latents(tiny.vae, latents, 4, 2)
    torch.testing.assert_close(halves[:2], decode_latents(tiny.vae, latents[:2], 2, 2))
    assert not torch.allclose(whole, halves, atol=1e-5)  # the temporal decoder mixes frames of a chunk


def test_decode_latents_errors(tiny):
    latents = torch.zeros(FRAMES, 4, 4, 4)
    with pytest.raises(RecaptureError, match="latents hold 3 frames but num_frames=4"):
        decode_latents(tiny.vae, latents, 4)
    with pytest.raises(RecaptureError, match=r"latents must be \(T, 4, h, w\)"):
        decode_latents(tiny.vae, latents[None], FRAMES)
    with pytest.raises(RecaptureError, match="chunk_size"):
        decode_latents(tiny.vae, latents, FRAMES, 0)


def test_forward_chunking_same_result_and_restored(tiny, image):
    plain = generate(tiny, image, FRAMES, _fast(), adapters=None, progress=False)
    chunked = generate(tiny, image, FRAMES, _fast(forward_chunking=True), adapters=None, progress=False)
    # chunking reorders no arithmetic per token, but BLAS may round the smaller GEMMs differently
    # (6e-5 seen on an AVX-512 CPU after two sampling steps)
    torch.testing.assert_close(chunked.latents, plain.latents, rtol=1e-4, atol=2e-4)
    blocks = [m for m in tiny.unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    assert blocks and all(m._chunk_size is None for m in blocks)
    with feed_forward_chunking(tiny.unet, True):
        assert all(m._chunk_size == 1 for m in blocks)
    assert all(m._chunk_size is None for m in blocks)


def test_cpu_offload_is_ignored_on_cpu_with_a_log_line(tiny, image, caplog):
    plain = generate(tiny, image, FRAMES, _fast(), adapters=None, progress=False)
    with caplog.at_level(logging.INFO, logger="recapture.sampling"):
        offload = generate(tiny, image, FRAMES, _fast(cpu_offload=True), adapters=None, progress=False)
    assert torch.equal(offload.latents, plain.latents)
    assert "cpu_offload ignored" in caplog.text


def test_model_offload_hooks_are_installed_and_removed(image):
    """The accelerate hooks path (used on CUDA), run with the CPU as execution device."""
    from recapture.adaptation import build_tiny_components

    components = build_tiny_components(seed=0)
    plain = generate(components, image, FRAMES, _fast(), adapters=None, progress=False)
    models = [components.image_encoder, components.unet, components.vae]
    with model_offload(components, torch.device("cpu")):
        assert all(hasattr(m, "_hf_hook") for m in models)
        hooked = generate(components, image, FRAMES, _fast(), adapters=None, progress=False)
    assert not any(hasattr(m, "_hf_hook") for m in models)
    assert torch.equal(hooked.latents, plain.latents)


@pytest.mark.gpu
def test_cpu_offload_on_cuda_lowers_peak_memory(image):
    from recapture.adaptation import build_tiny_components

    components = build_tiny_components(seed=0)
    for m in (components.unet, components.vae, components.image_encoder):
        m.to("cuda")
    plain = generate(components, image, FRAMES, _fast(), adapters=None, progress=False)
    offload = generate(components, image, FRAMES, _fast(cpu_offload=True), adapters=None, progress=False)
    torch.testing.assert_close(offload.latents, plain.latents)
    assert offload.peak_memory_bytes < plain.peak_memory_bytes
    assert next(components.unet.parameters()).device.type == "cuda"  # moved back


def test_progress_bar_and_its_switch(tiny, image, capsys):
    generate(tiny, image, FRAMES, _fast(), adapters=None, progress=True)
    assert "generate" in capsys.readouterr().err
    generate(tiny, image, FRAMES, _fast(), adapters=None, progress=False)
    assert "generate" not in capsys.readouterr().err


def test_half_precision_upcasts_the_vae_for_encoding_only(image, video):
    from recapture.adaptation import build_tiny_components
    from recapture.sampling.conditioning import vae_upcast

    components = build_tiny_components(seed=0)
    for m in (components.unet, components.vae, components.image_encoder):
        m.to(torch.float16)
    components.vae.register_to_config(force_upcast=True)
    with vae_upcast(components.vae):
        assert components.vae.dtype == torch.float32
    assert components.vae.dtype == torch.float16
    config = _fast(anchor_strength=0.5)
    out = generate(components, image, FRAMES, config, anchor=video, adapters=None, progress=False)
    assert out.latents.dtype == torch.float32 and torch.isfinite(out.latents).all()
    assert components.vae.dtype == torch.float16 and components.unet.dtype == torch.float16
