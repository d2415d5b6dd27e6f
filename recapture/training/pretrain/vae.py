"""Stage 1 of the prior: the temporal-decoder VAE, trained on endless procedural clips.

Loss: per-pixel reconstruction (L1 or squared error) of whole clips through the temporal decoder
plus a small KL term (:func:`recapture.adaptation.prior.vae_reconstruction_loss`). Validation:
reconstruction PSNR (posterior mode) on held-out clips (``split="eval"``), logged as ``val/psnr``.
The export fits ``scaling_factor`` (unit-std latents, as SVD's) and saves ``vae/`` in diffusers
layout, which the UNet stage (``model.vae_dir``) reads.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable

from recapture.adaptation.prior import (
    VAESize,
    boost_output_colour,
    count_parameters,
    fit_scaling_factor,
    plain_vae,
    reconstruct,
    vae_reconstruction_loss,
    weights_bytes,
)
from recapture.metrics.image import psnr
from recapture.training.pretrain.base import LRSchedule, PriorStage, default_optimizer
from recapture.training.pretrain.quality import colour_kept
from recapture.utils import RecaptureError

log = logging.getLogger(__name__)


class VAEStage(PriorStage):
    """Train the prior's temporal VAE (``AutoencoderKLTemporalDecoder``) from scratch on procedural clips.

    Args:
        vae: size of the VAE (levels, channels, latent channels).
        kl_weight: weight of the mean KL term.
        reconstruction: ``l1`` or ``mse`` per-pixel reconstruction loss.
        seed: seed of the initial weights.
        scaling_clips: training clips used at export to fit the latent scaling factor.
        train_crop: ``(h, w)`` random crop (the same for every frame of a batch) of the training
            clips, multiples of the VAE factor; None trains on whole frames. The VAE is convolutional,
            so crops train the same weights at a fraction of a step's cost: on CPU, four 32x48 crop
            steps of 64x96 clips reached a higher held-out PSNR than one whole-frame step of the
            same compute (measured). Validation and export always use whole frames.
        colour_boost: train in a colour space with this many times the chroma of RGB (the decoder's
            last layer stored there by :func:`~recapture.adaptation.prior.boost_output_colour`, the
            loss scored there); 1 trains in RGB. The export folds it back: a plain diffusers VAE.
        colour_anneal: ``(start, end)`` steps over which the loss's chroma weight falls linearly
            from ``colour_boost`` to ``colour_final`` (the storage stays), so luminance gets more of
            the loss once colour is learnt; None keeps the weight at ``colour_boost``.
        colour_final: the chroma weight after ``colour_anneal``. Measured: annealed to 1, a VAE
            that had learnt colour at weight 6 went grey again within 250 steps.
        optimizer: optimizer factory (default AdamW, lr 1e-3).
        lr_schedule: warm-up and decay of the learning rate.
    """

    stage = "vae"

    def __init__(
        self,
        vae: VAESize = VAESize(),
        kl_weight: float = 1e-6,
        reconstruction: Literal["l1", "mse"] = "l1",
        seed: int = 0,
        scaling_clips: int = 16,
        train_crop: tuple[int, int] | None = None,
        colour_boost: float = 1.0,
        colour_anneal: tuple[int, int] | None = None,
        colour_final: float = 1.0,
        optimizer: OptimizerCallable = default_optimizer,
        lr_schedule: LRSchedule = LRSchedule(),
    ) -> None:
        super().__init__(optimizer, replace(lr_schedule))
        self.size = replace(vae)
        self.kl_weight, self.reconstruction = kl_weight, reconstruction
        self.seed, self.scaling_clips = seed, scaling_clips
        if train_crop is not None and (len(train_crop) != 2 or any(c <= 0 or c % self.size.factor for c in train_crop)):
            raise RecaptureError(
                f"model.train_crop={train_crop} must be (h, w) positive multiples of the VAE factor {self.size.factor}"
            )
        self.train_crop = None if train_crop is None else (int(train_crop[0]), int(train_crop[1]))
        if not (colour_boost > 0 and colour_final > 0) or (
            colour_anneal is not None and not 0 <= colour_anneal[0] <= colour_anneal[1]
        ):
            raise RecaptureError(
                f"model.colour_boost={colour_boost} and model.colour_final={colour_final} must be > 0 and "
                f"model.colour_anneal={colour_anneal} (start, end) steps with 0 <= start <= end, or null"
            )
        self.colour_boost, self.colour_final = float(colour_boost), float(colour_final)
        self.colour_anneal = None if colour_anneal is None else (int(colour_anneal[0]), int(colour_anneal[1]))
        self.vae = self.size.build(seed)
        boost_output_colour(self.vae, self.colour_boost)

    def chroma_weight(self, step: int) -> float:
        """The loss's chroma weight at ``step``: ``colour_boost``, annealed to ``colour_final`` over ``colour_anneal``."""
        if self.colour_anneal is None:
            return self.colour_boost
        start, end = self.colour_anneal
        progress = 1.0 if step >= end else max(0.0, (step - start) / max(1, end - start))
        return self.colour_boost + (self.colour_final - self.colour_boost) * progress

    def crop(self, video: torch.Tensor) -> torch.Tensor:
        """A random ``train_crop`` window of ``video`` ``(B, T, 3, H, W)`` (the clip itself when cropping is off)."""
        if self.train_crop is None:
            return video
        (ch, cw), (h, w) = self.train_crop, video.shape[-2:]
        if ch > h or cw > w:
            raise RecaptureError(f"model.train_crop={self.train_crop} is larger than the {h}x{w} frames")
        f = self.size.factor  # offsets on the latent grid, so crops tile like whole frames
        y = int(torch.randint(0, (h - ch) // f + 1, ())) * f
        x = int(torch.randint(0, (w - cw) // f + 1, ())) * f
        return video[..., y : y + ch, x : x + cw]

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.vae.parameters())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        video = self.crop(batch["video"])
        weight = self.chroma_weight(self.global_step)
        out = vae_reconstruction_loss(self.vae, video, self.kl_weight, self.reconstruction, chroma_weight=weight)
        b = video.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=b)
        self.log("train/reconstruction", out.reconstruction, batch_size=b)
        self.log("train/kl", out.kl, batch_size=b)
        if self.colour_boost != 1.0:
            self.log("train/chroma_weight", weight, batch_size=b)
        self.log("train/psnr", psnr(out.decoded.clamp(0, 1), video).mean().float(), batch_size=b)
        self.log_lr(b)
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        video = batch["video"]
        decoded = reconstruct(self.vae, video)
        self.log("val/psnr", psnr(decoded, video).mean().float(), sync_dist=True, batch_size=video.shape[0])
        self.log("val/colour", colour_kept(decoded, video), sync_dist=True, batch_size=video.shape[0])

    def describe(self) -> dict[str, Any]:
        return {
            "vae": {"parameters": count_parameters(self.vae), "bytes": weights_bytes(self.vae),
                    "factor": self.size.factor, **asdict(self.size)},
        }

    @torch.no_grad()
    def export(self, out: Path, record: dict[str, Any]) -> dict[str, Any]:
        """Fit the latent scaling factor, save ``out/vae/`` (diffusers layout) and measure eval PSNR."""
        data = self.trainer.datamodule
        self.vae.eval()
        device = next(self.vae.parameters()).device
        scale = fit_scaling_factor(self.vae, data.reference_video(self.scaling_clips).to(device))
        self.vae.register_to_config(scaling_factor=scale)
        plain_vae(self.vae).save_pretrained(out / "vae", safe_serialization=True)  # colour storage folded
        video = data.eval_video(data.eval_clips).to(device)
        values = torch.cat([psnr(reconstruct(self.vae, v[None]), v[None]).mean(1) for v in video])
        figures = {"vae_scaling_factor": scale, "vae_eval_psnr_db": float(values.mean()),
                   "vae_eval_psnr_min_db": float(values.min()), "vae_eval_clips": len(values)}
        log.info("VAE export: scaling factor %.4f, eval PSNR %.2f dB on %d held-out clips -> %s",
                 scale, figures["vae_eval_psnr_db"], len(values), out / "vae")
        return figures
