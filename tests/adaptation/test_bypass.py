"""Temporal bypass: exact per-frame independence, zero temporal gradients, skip_compute parity."""

from __future__ import annotations

import pytest
import torch

from recapture.adaptation import (
    LoRAConfig,
    adapter_parameters,
    add_recapture_adapters,
    bypass_targets,
    set_trainable_adapter,
    temporal_bypass,
)


def _with_other_frames_changed(inputs: dict[str, torch.Tensor], keep: int) -> dict[str, torch.Tensor]:
    changed = dict(inputs)
    sample = inputs["sample"].clone()
    others = [i for i in range(sample.shape[1]) if i != keep]
    sample[:, others] = torch.randn_like(sample[:, others]) * 3.0
    changed["sample"] = sample
    return changed


@pytest.fixture(params=[False, True], ids=["attention", "with-convolutions"])
def lora_unet(tiny, perturb_adapter, request):  # noqa: ANN201
    """Both adapters perturbed; also with ``LoRAConfig.convolutions`` (temporal_res_block convs in the temporal LoRA)."""
    add_recapture_adapters(tiny.unet, LoRAConfig(convolutions=request.param))
    perturb_adapter(tiny.unet, "spatial")
    perturb_adapter(tiny.unet, "temporal", seed=2)
    return tiny.unet


@pytest.mark.parametrize("skip_compute", [False, True])
def test_frame_output_is_bitwise_independent_of_other_frames(
    lora_unet, unet_inputs, run_unet, skip_compute
) -> None:
    x = unet_inputs(batch=2, frames=4)
    y = _with_other_frames_changed(x, keep=1)
    with torch.no_grad():
        with temporal_bypass(lora_unet, skip_compute=skip_compute):
            a, b = run_unet(lora_unet, x), run_unet(lora_unet, y)
        assert torch.equal(a[:, 1], b[:, 1])
        assert not torch.equal(a[:, 0], b[:, 0])
        # Without the bypass the temporal layers mix frames.
        a, b = run_unet(lora_unet, x), run_unet(lora_unet, y)
        assert (a[:, 1] - b[:, 1]).abs().max() > 1e-5


def test_skip_compute_gives_the_same_output_and_hooks_are_removed(lora_unet, unet_inputs, run_unet) -> None:
    x = unet_inputs(batch=1, frames=3)
    with torch.no_grad():
        before = run_unet(lora_unet, x)
        with temporal_bypass(lora_unet):
            full = run_unet(lora_unet, x)
        with temporal_bypass(lora_unet, skip_compute=True):
            skipped = run_unet(lora_unet, x)
        after = run_unet(lora_unet, x)
    assert torch.equal(full, skipped)
    assert not torch.equal(full, before)
    assert torch.equal(after, before)  # everything restored on exit
    assert all("forward" not in vars(m) for m in lora_unet.modules())
    with pytest.raises(RuntimeError, match="boom"), temporal_bypass(lora_unet, skip_compute=True):
        raise RuntimeError("boom")
    with torch.no_grad():
        assert torch.equal(run_unet(lora_unet, x), before)


@pytest.mark.parametrize("skip_compute", [False, True])
def test_precomputed_targets_give_the_same_bypass(lora_unet, unet_inputs, run_unet, skip_compute) -> None:
    """What a training loop passes (targets found once) is the bypass found at each call, bit for bit."""
    targets = bypass_targets(lora_unet)
    assert len(targets.blocks) == len(lora_unet.down_blocks) + len(lora_unet.up_blocks) + 1
    assert targets.temporal and all(m in set(lora_unet.modules()) for m in targets.temporal)
    x = unet_inputs(batch=1, frames=3)
    with torch.no_grad():
        with temporal_bypass(lora_unet, skip_compute=skip_compute):
            found = run_unet(lora_unet, x)
        with temporal_bypass(lora_unet, skip_compute=skip_compute, targets=targets):
            given = run_unet(lora_unet, x)
        plain = run_unet(lora_unet, x)
    assert torch.equal(found, given)
    assert not torch.equal(given, plain)  # the bypass applied, and was removed on exit
    assert all("forward" not in vars(m) for m in lora_unet.modules())


def test_bypass_single_frame_differs_from_num_frames_one(lora_unet, unet_inputs, run_unet) -> None:
    # num_frames=1 alone is not a bypass: the temporal layers still transform the features.
    x = unet_inputs(batch=1, frames=1)
    with torch.no_grad():
        plain = run_unet(lora_unet, x)
        with temporal_bypass(lora_unet):
            bypassed = run_unet(lora_unet, x)
    assert (plain - bypassed).abs().max() > 1e-5


@pytest.mark.parametrize("checkpointing", [False, True])
def test_temporal_lora_gets_exactly_zero_gradient_under_bypass(
    lora_unet, unet_inputs, run_unet, checkpointing
) -> None:
    if checkpointing:
        lora_unet.enable_gradient_checkpointing()
    lora_unet.train()
    x = unet_inputs(batch=1, frames=2)
    with temporal_bypass(lora_unet):
        run_unet(lora_unet, x).square().mean().backward()
    temporal = adapter_parameters(lora_unet, "temporal")
    spatial = adapter_parameters(lora_unet, "spatial")
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in temporal)
    assert sum(int(torch.count_nonzero(p.grad)) for p in spatial if p.grad is not None) > 0


def test_spatial_lora_frozen_in_temporal_steps(lora_unet, unet_inputs, run_unet) -> None:
    set_trainable_adapter(lora_unet, "temporal")
    lora_unet.train()
    run_unet(lora_unet, unet_inputs(batch=1, frames=3)).square().mean().backward()
    assert all(p.grad is None for p in adapter_parameters(lora_unet, "spatial"))
    assert all(p.grad is None for n, p in lora_unet.named_parameters() if "lora_" not in n)
    grads = [p.grad for p in adapter_parameters(lora_unet, "temporal")]
    assert all(g is not None for g in grads) and sum(int(torch.count_nonzero(g)) for g in grads) > 0


def test_bypass_rejects_non_svd_module() -> None:
    with pytest.raises(ValueError, match="AlphaBlender"), temporal_bypass(torch.nn.Linear(2, 2)):
        pass
