"""The fine-tuning step as plain torch (``recapture.adaptation.step``): what each kind trains on, and the
benchmark that times it runs this very function."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from recapture.adaptation import (
    EDMConfig,
    LoRAConfig,
    add_recapture_adapters,
    added_time_ids,
    edm_loss,
    set_trainable_adapter,
    step_context,
    step_loss,
)

REPO = Path(__file__).resolve().parents[2]


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lat = (1, 3, 4, 8, 8)
    batch = {
        "temporal_latents": torch.randn(lat, generator=g),
        "temporal_cond_latents": torch.randn(1, 4, 8, 8, generator=g),
        "temporal_image_embeds": torch.randn(1, 1, 32, generator=g),
        "temporal_mask": torch.ones(1, 3, 1, 8, 8),
        "spatial_latents": torch.randn(2, 1, 4, 8, 8, generator=g),
        "spatial_cond_latents": torch.randn(2, 4, 8, 8, generator=g),
        "spatial_image_embeds": torch.randn(2, 1, 32, generator=g),
    }
    batch["temporal_mask"][:, 1:, :, :4] = 0
    return batch


def test_temporal_step_is_the_masked_loss_on_the_anchor(tiny) -> None:
    """Same noise draws: the step's loss equals edm_loss on the anchor tensors with its mask and time ids."""
    unet = tiny.unet
    objective = EDMConfig(conditioning_dropout=0.5)
    batch = _batch()
    out = step_loss(unet, batch, "temporal", objective, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    drop = torch.rand(1, generator=g) < 0.5
    time_ids = added_time_ids(objective.fps, objective.motion_bucket_id, objective.noise_aug_strength, 1)
    ref = edm_loss(unet, batch["temporal_latents"], batch["temporal_cond_latents"], batch["temporal_image_embeds"],
                   time_ids, mask=batch["temporal_mask"], config=objective, generator=g, drop_conditioning=drop)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=0)
    torch.testing.assert_close(out.dropped, ref.dropped)
    unmasked = step_loss(unet, {**batch, "temporal_mask": torch.ones_like(batch["temporal_mask"])}, "temporal",
                         objective, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(unmasked.loss, out.loss)  # the mask is applied


def test_spatial_step_uses_source_frames_unmasked(tiny) -> None:
    unet = tiny.unet
    batch = _batch()
    first = step_loss(unet, batch, "spatial", EDMConfig(), generator=torch.Generator().manual_seed(4))
    no_hole = {**batch, "temporal_mask": torch.ones_like(batch["temporal_mask"])}
    again = step_loss(unet, no_hole, "spatial", EDMConfig(), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(first.loss, again.loss, rtol=0, atol=0)  # the anchor's mask plays no part
    assert first.per_element.shape == batch["spatial_latents"].shape
    other = step_loss(unet, {**batch, "spatial_latents": batch["spatial_latents"] + 1}, "spatial", EDMConfig(),
                      generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other.loss, first.loss)  # and the source frames do


def test_spatial_context_bypasses_the_temporal_lora_in_backward(tiny) -> None:
    """Under step_context('spatial') a trainable temporal LoRA is out of the graph; without it, it is in."""
    unet = tiny.unet
    add_recapture_adapters(unet, LoRAConfig(rank=2))
    set_trainable_adapter(unet, "temporal")
    batch = _batch()
    with step_context(unet, "spatial"):
        bypassed = step_loss(unet, batch, "spatial", EDMConfig(), generator=torch.Generator().manual_seed(5)).loss
    assert not bypassed.requires_grad  # nothing trainable reached: the temporal layers were skipped
    plain = step_loss(unet, batch, "spatial", EDMConfig(), generator=torch.Generator().manual_seed(5)).loss
    assert plain.requires_grad
    with step_context(unet, "temporal"):  # a temporal step runs the temporal layers
        assert step_loss(unet, batch, "temporal", EDMConfig(), generator=torch.Generator().manual_seed(5)).loss.requires_grad


@pytest.mark.parametrize("kind", ["temporal", "spatial"])
def test_finetune_benchmark_times_the_real_step(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/finetune_step.py`` calls :func:`step_loss` (no copy of the step) and prints its row."""
    spec = importlib.util.spec_from_file_location("finetune_step", REPO / "benchmarks" / "finetune_step.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "finetune_step", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    calls = []
    real = bench.step_loss
    monkeypatch.setattr(bench, "step_loss", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    # with gradient checkpointing: the spatial step's backward must run under the bypass too (it did not)
    text = bench.main(["--device", "cpu", "--sizes", "2x16x16", "--kinds", kind, "--steps", "1", "--warmup", "0",
                       "--grad-checkpointing", "on", "--no-flops"])
    assert calls == [kind] and f"| {kind} | 2x16x16 | tiny | fp32 | on | no |" in text


# what makes the host wait for the device (or copies to it): none may run in a training step
_SYNCS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "nonzero", "cpu", "numpy"}


class _SyncRecorder(torch.overrides.TorchFunctionMode):
    """Records every tensor method or function of :data:`_SYNCS` called inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = getattr(func, "__name__", str(func))
        if name in _SYNCS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["temporal", "spatial"])
def test_a_training_step_never_waits_for_the_device(tiny, kind) -> None:  # noqa: ANN001
    """No host-device sync in forward + backward (GPU steps stay queued); the checked mask is the control."""
    unet = tiny.unet
    unet.requires_grad_(False)
    add_recapture_adapters(unet, LoRAConfig(rank=4))
    unet.enable_gradient_checkpointing()
    unet.train()
    set_trainable_adapter(unet, kind)
    batch = _batch()
    with _SyncRecorder() as recorder, step_context(unet, kind, skip_compute=True):
        step_loss(unet, batch, kind, EDMConfig()).loss.backward()
    assert recorder.calls == []
    with _SyncRecorder() as control:  # what the per-step mask check used to cost
        edm_loss(unet, batch["temporal_latents"], batch["temporal_cond_latents"], batch["temporal_image_embeds"],
                 added_time_ids(7, 127, 0.02, 1), mask=batch["temporal_mask"])
    assert control.calls == ["__bool__"]
