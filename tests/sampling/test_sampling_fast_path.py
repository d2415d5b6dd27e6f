"""The sampler's fast path: LoRAs merged into float32 weights for a call, temporal convolutions via oneDNN.

Both must give the video the plain path gives (to float32 rounding) and leave the models exactly as
they were: sampling runs in the middle of training (callbacks), on the weights training goes on with.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from recapture.adaptation import LoRAConfig, add_recapture_adapters, build_tiny_components
from recapture.host_memory import host_memory_reuse_available
from recapture.sampling import (
    SamplingConfig,
    generate,
    merged_lora,
    onednn_temporal_convolutions,
    use_adapters,
)

FRAMES = 3


def _config(**kwargs) -> SamplingConfig:
    return SamplingConfig(**{"num_inference_steps": 2, "max_guidance_scale": 2.0, "seed": 5, **kwargs})


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _lora_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


@pytest.fixture
def trained_like(perturb):
    """Tiny parts with both adapters holding LoRA updates of a trained size.

    The conftest's ``lora_components`` have large random ones (scale 0.5) that make this random model
    chaotic: float rounding then grows to ~2e-3 in one UNet call, as much as running on 2 threads
    instead of 1 changes it.
    """
    components = build_tiny_components(seed=0)
    add_recapture_adapters(components.unet, LoRAConfig(rank=4))
    perturb(components, "spatial", 1, scale=0.05)
    perturb(components, "temporal", 2, scale=0.05)
    return components


def test_merged_sampling_gives_the_unmerged_video_and_restores_the_weights_bit_for_bit(trained_like, image):
    components = trained_like
    unet = components.unet
    before = _snapshot(unet)
    merged = generate(components, image, FRAMES, _config(merge_lora=True), progress=False)
    after_merged = _snapshot(unet)
    plain = generate(components, image, FRAMES, _config(merge_lora=False), progress=False)
    base = generate(components, image, FRAMES, _config(), adapters=[], progress=False)

    assert after_merged.keys() == before.keys()
    assert all(torch.equal(after_merged[k], before[k]) for k in before), (
        "a base weight was not restored exactly"
    )
    assert not any(layer.merged for layer in _lora_layers(unet))
    # the same video to float32 rounding (the merge computes W x + B A x as (W + B A) x; 3e-5 measured) ...
    torch.testing.assert_close(merged.latents, plain.latents, rtol=0, atol=2e-4)
    torch.testing.assert_close(merged.frames, plain.frames, rtol=0, atol=2e-4)
    # ... while the adapters move it far more (0.11 measured): a merge that dropped them would fail above
    assert (plain.latents - base.latents).abs().max() > 0.05


def test_merge_folds_only_active_float32_adapters_and_undoes_itself_on_errors(trained_like):
    unet = trained_like.unet
    before = _snapshot(unet)
    x = torch.randn(1, FRAMES, 8, 4, 4)
    args = dict(
        encoder_hidden_states=torch.randn(1, 1, 32), added_time_ids=torch.randn(1, 3), return_dict=False
    )
    with torch.no_grad(), use_adapters(unet, ["spatial", "temporal"]):
        plain = unet(x, 10.0, **args)[0]
        with merged_lora(unet) as count:
            layers = _lora_layers(unet)
            assert count == len(layers) > 0 and all(layer.merged for layer in layers)
            changed = [
                k for k, v in unet.state_dict().items() if "base_layer" in k and not torch.equal(v, before[k])
            ]
            assert changed, "merging changed no base weight"
            torch.testing.assert_close(unet(x, 10.0, **args)[0], plain, rtol=0, atol=1e-5)
        with pytest.raises(RuntimeError, match="boom"), merged_lora(unet):
            raise RuntimeError("boom")
        with merged_lora(unet, enabled=False) as count:
            assert count == 0
    with use_adapters(unet, ["spatial"]), merged_lora(unet) as count:  # only the spatial layers merge
        spatial = [m for m in _lora_layers(unet) if "spatial" in m.active_adapters and "spatial" in m.lora_A]
        assert count == len(spatial) < len(_lora_layers(unet))
    with use_adapters(unet, []), merged_lora(unet) as count:  # adapters off: nothing to fold
        assert count == 0
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    assert not any(layer.merged for layer in _lora_layers(unet))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_never_merged(dtype):
    """Rounding W + BA to 16 bits would lose most of a small LoRA update: those layers keep their branch."""
    components = build_tiny_components(seed=0)
    add_recapture_adapters(components.unet, LoRAConfig(rank=4))
    unet = components.unet.to(dtype)
    before = _snapshot(unet)
    with merged_lora(unet) as count:
        assert count == 0
        assert not any(layer.merged for layer in _lora_layers(unet))
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_temporal_convolutions_run_through_onednn_for_the_call_only():
    """Single-threaded, PyTorch sends (3, 1, 1) kernels to slow_conv3d; inside the block they use oneDNN."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(32, 32, (3, 1, 1), padding=(1, 0, 0)),  # a temporal convolution: rerouted
        torch.nn.Conv3d(32, 3, (3, 1, 1), padding=(1, 0, 0)),  # 32 in: rerouted
        torch.nn.Conv3d(3, 3, (3, 1, 1), padding=(1, 0, 0)),  # 3 in: faster on PyTorch's own kernel
        torch.nn.Conv3d(3, 3, 3, padding=1),  # not temporal
    )
    x = torch.randn(1, 32, 6, 16, 24)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            stock = model(x)
            stock_ops = _ops(lambda: model(x))
            with onednn_temporal_convolutions(model) as count:
                assert count == 2 and "forward" in vars(model[0]) and "forward" not in vars(model[2])
                fast = model(x)
                fast_ops = _ops(lambda: model(x))
        with onednn_temporal_convolutions(model):  # gradients on: the stock path, so backward works
            y = model(x.requires_grad_())
            y.sum().backward()
            assert x.grad is not None
    finally:
        torch.set_num_threads(threads)
    assert not any("forward" in vars(m) for m in model)
    assert "aten::slow_conv3d_forward" in stock_ops, "the premise: PyTorch picks its slow kernel here"
    assert "aten::mkldnn_convolution" in fast_ops
    torch.testing.assert_close(fast, stock, rtol=0, atol=1e-5)


def test_cpu_sampling_takes_large_tensors_from_the_heap_with_the_same_bits(trained_like, image, monkeypatch):
    """``reuse_host_memory`` wraps the call in ``reused_host_memory`` (the allocator's own test:
    tests/test_host_memory.py); the arithmetic is untouched, so the video is the same bits."""
    import recapture.sampling.session as session

    seen = []
    real = session.reused_host_memory

    @contextlib.contextmanager
    def spy(enabled=True):
        with real(enabled) as changed:
            seen.append((enabled, changed))
            yield changed

    monkeypatch.setattr(session, "reused_host_memory", spy)
    reused = generate(trained_like, image, FRAMES, _config(reuse_host_memory=True), progress=False)
    fresh = generate(trained_like, image, FRAMES, _config(reuse_host_memory=False), progress=False)
    assert [enabled for enabled, _ in seen] == [True, False]
    assert seen[1][1] is False
    assert seen[0][1] is host_memory_reuse_available()
    assert torch.equal(reused.frames, fresh.frames)
