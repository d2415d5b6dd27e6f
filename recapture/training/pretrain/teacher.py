"""A plain convolutional autoencoder that teaches the temporal VAE its latent space (colour included).

Why: trained end to end from scratch, the small ``AutoencoderKLTemporalDecoder`` of the prior learns
luminance and stays grey for thousands of CPU steps, while a plain stack of convolutions and SiLUs
with the same 4x, 4-channel latent learns colour in a couple of minutes (``benchmarks/README.md``,
"The shipped prior"). Its latents carry the colour, so the VAE first learns from them:

1. :class:`PlainAutoencoder` is trained alone (:func:`train_teacher`, ``model.teacher_steps``), then frozen;
2. distillation (``model.distill_steps``): the VAE's decoder reconstructs clips from the teacher's
   latents and its encoder regresses them (:func:`distillation_loss`);
3. the VAE trains end to end as usual; the teacher is not part of the export.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import nn

from recapture.utils import RecaptureError

log = logging.getLogger(__name__)


class PlainAutoencoder(nn.Module):
    """3x3 convolutions and SiLUs: ``levels - 1`` stride-2 convolutions down to ``latent`` channels, and back.

    Args:
        levels: resolution levels, as the VAE's ``block_out_channels`` (spatial factor ``2 ** (levels - 1)``).
        latent: latent channels (the VAE's).
        width: channels at full resolution.
        hidden: channels at every lower resolution.
    """

    def __init__(self, levels: int, latent: int, width: int = 64, hidden: int = 64) -> None:
        super().__init__()
        if levels < 1 or min(latent, width, hidden) < 1:
            raise RecaptureError(f"teacher: levels={levels}, latent={latent}, width={width}, hidden={hidden} must be >= 1")
        act = nn.SiLU
        down: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), act()]
        channels = width
        for _ in range(levels - 1):
            down += [nn.Conv2d(channels, hidden, 3, 2, 1), act()]
            channels = hidden
        self.encoder = nn.Sequential(*down, nn.Conv2d(channels, latent, 3, padding=1))
        up: list[nn.Module] = [nn.Conv2d(latent, channels, 3, padding=1), act()]
        for i in range(levels - 1):
            out = width if i == levels - 2 else hidden
            up += [nn.Upsample(scale_factor=2), nn.Conv2d(channels, out, 3, padding=1), act()]
            channels = out
        self.decoder = nn.Sequential(*up, nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def train_teacher(
    teacher: PlainAutoencoder,
    batches: Iterable[torch.Tensor],
    steps: int,
    lr: float = 2e-3,
    warmup: int = 50,
    report: Callable[[int, float], None] | None = None,
) -> float:
    """Train ``teacher`` with L1 on frames in [-1, 1] for ``steps`` steps (AdamW, warm-up, clipping at 1).

    Args:
        teacher: the autoencoder, trained in place and left in eval mode.
        batches: endless ``(N, 3, H, W)`` frames in [-1, 1] (H, W multiples of its factor).
        steps: optimiser steps.
        lr: AdamW learning rate after ``warmup`` linear warm-up steps.
        report: called as ``report(step, loss)`` every 100 steps and at the last.

    Returns:
        the last step's loss.
    """
    params = list(teacher.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    teacher.train()
    loss = torch.zeros(())
    iterator = iter(batches)
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / max(1, warmup))
        x = next(iterator)
        loss = (teacher(x) - x).abs().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if report is not None and (step % 100 == 0 or step == steps):
            report(step, float(loss.detach()))
    teacher.eval()
    return float(loss.detach())


class Distillation(NamedTuple):
    """Terms of :func:`distillation_loss`."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    latent: torch.Tensor
    decoded: torch.Tensor


def distillation_loss(vae: nn.Module, teacher: PlainAutoencoder, frames: torch.Tensor, num_frames: int,
                      latent_weight: float = 1.0) -> Distillation:
    """The VAE learns the teacher's latent space: L1 of its decoder on the teacher's latents + squared
    error of its encoder's posterior mean against them (each half learns on its own).

    Args:
        vae: ``AutoencoderKLTemporalDecoder``.
        teacher: the trained, frozen teacher.
        frames: ``(B * T, 3, H, W)`` in [-1, 1].
        num_frames: ``T`` (the temporal decoder sees clips).
        latent_weight: weight of the encoder's regression.

    Returns:
        :class:`Distillation` (``decoded`` in [-1, 1]); only ``loss`` carries gradients, the parts are
        detached for logging (as :class:`~recapture.adaptation.prior.VAELoss`).
    """
    with torch.no_grad():
        target = teacher.encoder(frames)
    decoded = vae.decode(target.to(frames.dtype), num_frames=num_frames).sample
    reconstruction = (decoded.float() - frames.float()).abs().mean()
    latent = (vae.encode(frames).latent_dist.mean.float() - target.float()).square().mean()
    return Distillation(reconstruction + latent_weight * latent, reconstruction.detach(), latent.detach(),
                        decoded.detach())


def run_teacher(teacher: PlainAutoencoder, batches: Iterable[torch.Tensor], steps: int) -> float:
    """:func:`train_teacher` with a log line every 100 steps (steps, loss, elapsed); returns the seconds it took."""
    start = time.monotonic()

    def report(step: int, loss: float) -> None:
        log.info("teacher %d/%d  L1 %.4f  %.0f s", step, steps, loss, time.monotonic() - start)

    train_teacher(teacher, batches, steps, report=report)
    return time.monotonic() - start
