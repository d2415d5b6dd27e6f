"""One ReCapture fine-tuning step as plain torch: the loss of a temporal or a spatial batch.

:class:`~recapture.training.module.ReCaptureModule` runs it inside Lightning's loop, and
``benchmarks/finetune_step.py`` / ``benchmarks/framework_overhead.py`` run exactly the same function
on bare tensors, so the benchmarks time the real step.

A batch is the data module's dict (``T`` frames, latents ``h = H / 8``):

* ``temporal_latents`` ``(B, T, 4, h, w)``, ``temporal_cond_latents`` ``(B, 4, h, w)``,
  ``temporal_image_embeds`` ``(B, 1, D)``, ``temporal_mask`` ``(B, T, 1, h, w)``: the anchor video;
* ``spatial_latents`` ``(B', 1, 4, h, w)`` (or any clip length), ``spatial_cond_latents``,
  ``spatial_image_embeds``: augmented source frames (no mask).
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
from torch import nn

from recapture.adaptation.bypass import BypassTargets, temporal_bypass
from recapture.adaptation.objective import EDMConfig, LossOutput, edm_loss

__all__ = ["Kind", "step_context", "step_loss"]

Kind = Literal["temporal", "spatial"]


def step_context(
    unet: nn.Module, kind: Kind, skip_compute: bool = True, targets: BypassTargets | None = None
) -> contextlib.AbstractContextManager[Any]:
    """What a step of ``kind`` runs under: the temporal bypass for spatial steps, nothing for temporal ones.

    Enter it for the forward AND the backward pass, so that checkpointed blocks recomputed during
    backward are bypassed too. ``targets``: :func:`~recapture.adaptation.bypass.bypass_targets` of
    ``unet``, computed once per loop (None: found at every call).
    """
    if kind == "spatial":
        return temporal_bypass(unet, skip_compute=skip_compute, targets=targets)
    return contextlib.nullcontext()


def step_loss(
    unet: nn.Module,
    batch: dict[str, torch.Tensor],
    kind: Kind,
    objective: EDMConfig,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """The EDM loss of one step of ``kind`` on ``batch`` (the caller enters :func:`step_context`).

    Temporal steps use the anchor's latents and its latent validity mask (the masked loss); spatial
    steps use source frames, unmasked. The micro-conditioning comes from ``objective``, and
    conditioning dropout is drawn per sample with probability ``objective.conditioning_dropout``.

    Args:
        unet: the SVD UNet with the ReCapture adapters (the trainable one set by the caller).
        batch: the data module's batch (see the module docstring).
        kind: ``temporal`` or ``spatial``.
        objective: the EDM settings.
        generator: randomness of the dropout, noise levels and noise (None: the global RNG).

    Returns:
        :class:`~recapture.adaptation.objective.LossOutput`.
    """
    latents = batch[f"{kind}_latents"]
    mask = batch["temporal_mask"] if kind == "temporal" else None
    b = latents.shape[0]
    time_ids = objective.time_ids(b).to(latents)  # its MicroConditioning, as sampling's
    drop = torch.rand(b, device=latents.device, generator=generator) < objective.conditioning_dropout
    # no per-step mask check (a host-device sync): encode_training_tensors refused a mask without a
    # valid latent, and the temporal batch is that whole mask
    return edm_loss(unet, latents, batch[f"{kind}_cond_latents"], batch[f"{kind}_image_embeds"], time_ids, mask=mask,
                    config=objective, generator=generator, drop_conditioning=drop, check_mask=False)
