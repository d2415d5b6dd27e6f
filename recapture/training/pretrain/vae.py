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
    fix_readout,
    plain_vae,
    reconstruct,
    seeded,
    vae_reconstruction_loss,
    weights_bytes,
)
from recapture.metrics.image import psnr
from recapture.training.pretrain.base import LRSchedule, PriorStage, default_optimizer
from recapture.training.pretrain.quality import colour_kept
from recapture.training.pretrain.teacher import PlainAutoencoder, distillation_loss, run_teacher
from recapture.training.step_logging import host_value
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
        crop_steps: train on ``train_crop`` crops for this many steps and on whole frames after
            them (crops do not train the mid-block attention for whole frames: measured, a VAE
            trained on crops only lost ~1 dB on whole frames that 250 whole-frame steps won back);
            None: crops throughout.
        colour_boost: train in a colour space with this many times the chroma of RGB (the decoder's
            last layer stored there by :func:`~recapture.adaptation.prior.boost_output_colour`, the
            loss scored there); 1 trains in RGB. The export folds it back: a plain diffusers VAE.
        colour_anneal: ``(start, end)`` steps over which the loss's chroma weight falls linearly
            from ``colour_boost`` to ``colour_final`` (the storage stays), so luminance gets more of
            the loss once colour is learnt; None keeps the weight at ``colour_boost``.
        colour_final: the chroma weight after ``colour_anneal``. Measured: annealed to 1, a VAE
            that had learnt colour at weight 6 went grey again within 250 steps.
        fixed_readout: hold the decoder's colour readout fixed and balanced (``conv_out`` at
            orthogonal rows, ``time_conv_out`` at the identity; :func:`~recapture.adaptation.prior.fix_readout`),
            so chroma errors reach the decoder as strongly as luminance errors. With
            ``vae.block_out_channels[0] >= 64`` (two channels per GroupNorm group where the decoder
            normalises its last features) this is the recipe that learns colour on CPU; the saved
            VAE is a plain diffusers one. Not combinable with ``colour_boost``.
        teacher_steps: first train a plain convolutional autoencoder with the VAE's factor and
            latent channels for this many steps (before step 0, logged as ``teacher i/n``; it
            learns colour in minutes where the VAE does not), then freeze it
            (:mod:`~recapture.training.pretrain.teacher`). 0: no teacher.
        distill_steps: the first steps of training learn from the teacher: the VAE's decoder
            reconstructs from the teacher's latents and its encoder regresses them; after them the
            VAE trains end to end. Needs ``teacher_steps > 0``.
        teacher_width: the teacher's channels (every level).
        teacher_pool: training clips rendered once for the teacher (random clips and crops of them
            each step).
        latent_weight: weight of the encoder's regression while distilling.
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
        crop_steps: int | None = None,
        colour_boost: float = 1.0,
        colour_anneal: tuple[int, int] | None = None,
        colour_final: float = 1.0,
        fixed_readout: bool = False,
        teacher_steps: int = 0,
        distill_steps: int = 0,
        teacher_width: int = 64,
        teacher_pool: int = 64,
        latent_weight: float = 1.0,
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
        if crop_steps is not None and (crop_steps < 0 or train_crop is None):
            raise RecaptureError(f"model.crop_steps={crop_steps} must be >= 0 and needs model.train_crop")
        self.crop_steps = crop_steps
        if not (colour_boost > 0 and colour_final > 0) or (
            colour_anneal is not None and not 0 <= colour_anneal[0] <= colour_anneal[1]
        ):
            raise RecaptureError(
                f"model.colour_boost={colour_boost} and model.colour_final={colour_final} must be > 0 and "
                f"model.colour_anneal={colour_anneal} (start, end) steps with 0 <= start <= end, or null"
            )
        self.colour_boost, self.colour_final = float(colour_boost), float(colour_final)
        self.colour_anneal = None if colour_anneal is None else (int(colour_anneal[0]), int(colour_anneal[1]))
        if fixed_readout and self.colour_boost != 1.0:
            raise RecaptureError(
                f"model.fixed_readout=true and model.colour_boost={colour_boost} cannot be combined: set "
                "colour_boost to 1 (the fixed readout is the recipe that learns colour)"
            )
        self.fixed_readout = bool(fixed_readout)
        if teacher_steps < 0 or distill_steps < 0 or (distill_steps and not teacher_steps) or latent_weight < 0:
            raise RecaptureError(
                f"model.teacher_steps={teacher_steps} and model.distill_steps={distill_steps} must be >= 0, "
                f"distilling needs a teacher (teacher_steps > 0), and model.latent_weight={latent_weight} >= 0"
            )
        self.teacher_steps, self.distill_steps = int(teacher_steps), int(distill_steps)
        self.latent_weight = float(latent_weight)
        if teacher_pool < 1:
            raise RecaptureError(f"model.teacher_pool={teacher_pool} must be >= 1")
        self.teacher_pool = int(teacher_pool)
        self.teacher: PlainAutoencoder | None = None
        if self.teacher_steps:
            with seeded(seed + 1):
                self.teacher = PlainAutoencoder(
                    len(self.size.block_out_channels), self.size.latent_channels, teacher_width, teacher_width
                )
        # set once the teacher is trained: a resumed run (the teacher is in the checkpoint) skips it
        self.register_buffer("teacher_trained", torch.zeros((), dtype=torch.bool))
        self.register_buffer("teacher_seconds", torch.zeros((), dtype=torch.float64))  # for the model card
        self.teacher_trained_here = False  # this run trained it (a resumed one does not)
        self.vae = self.size.build(seed)
        boost_output_colour(self.vae, self.colour_boost)
        if self.fixed_readout:
            fix_readout(self.vae, seed=seed)

    def chroma_weight(self, step: int) -> float:
        """The loss's chroma weight at ``step``: ``colour_boost``, annealed to ``colour_final`` over ``colour_anneal``."""
        if self.colour_anneal is None:
            return self.colour_boost
        start, end = self.colour_anneal
        progress = 1.0 if step >= end else max(0.0, (step - start) / max(1, end - start))
        return self.colour_boost + (self.colour_final - self.colour_boost) * progress

    def crop(self, video: torch.Tensor) -> torch.Tensor:
        """A random ``train_crop`` window of ``video`` ``(B, T, 3, H, W)`` (the clip itself when cropping is off)."""
        if self.train_crop is None or (self.crop_steps is not None and self.global_step >= self.crop_steps):
            return video
        (ch, cw), (h, w) = self.train_crop, video.shape[-2:]
        if ch > h or cw > w:
            raise RecaptureError(f"model.train_crop={self.train_crop} is larger than the {h}x{w} frames")
        f = self.size.factor  # offsets on the latent grid, so crops tile like whole frames
        y = int(torch.randint(0, (h - ch) // f + 1, ())) * f
        x = int(torch.randint(0, (w - cw) // f + 1, ())) * f
        return video[..., y : y + ch, x : x + cw]

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.vae.parameters() if p.requires_grad]

    def on_fit_start(self) -> None:
        """Train the teacher (once: a resumed run has it in its checkpoint), the same on every rank."""
        if self.teacher is None:
            return
        if not bool(self.teacher_trained):
            # the first training clips, rendered once: a teacher step takes far less than rendering fresh clips
            pool = self.trainer.datamodule.reference_video(self.teacher_pool)

            def frames():
                while True:
                    pick = torch.randint(0, len(pool), (self.trainer.datamodule.batch_size,))
                    yield self.crop(pool[pick].to(self.device)).flatten(0, 1) * 2.0 - 1.0

            log.info("training the teacher autoencoder for %d steps before the VAE", self.teacher_steps)
            self.teacher_seconds.fill_(run_teacher(self.teacher, frames(), self.teacher_steps))
            if self.trainer.world_size > 1:  # every rank distils from rank 0's teacher
                self.teacher.load_state_dict(self.trainer.strategy.broadcast(self.teacher.state_dict(), src=0))
            self.teacher_trained.fill_(True)
            self.teacher_trained_here = True
        self.teacher.requires_grad_(False).eval()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        video = self.crop(batch["video"])
        if self.teacher is not None and self.global_step < self.distill_steps:
            return self._distill_step(video)
        weight = self.chroma_weight(self.global_step)
        out = vae_reconstruction_loss(self.vae, video, self.kl_weight, self.reconstruction, chroma_weight=weight)
        b = video.shape[0]
        self.log_loss(out.loss, b)
        self.log("train/reconstruction", out.reconstruction, batch_size=b)
        self.log("train/kl", out.kl, batch_size=b)
        if self.colour_boost != 1.0:
            self.log("train/chroma_weight", host_value(weight), batch_size=b)
        self.log("train/psnr", psnr(out.decoded.clamp(0, 1), video).mean().float(), batch_size=b)
        self.log_lr(b)
        return out.loss

    def _distill_step(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        frames = video.flatten(0, 1) * 2.0 - 1.0
        out = distillation_loss(self.vae, self.teacher, frames, t, self.latent_weight)
        self.log_loss(out.loss, b)
        self.log("train/reconstruction", out.reconstruction, batch_size=b)
        self.log("train/distill_latent", out.latent, batch_size=b)
        decoded = ((out.decoded.float() + 1.0) / 2.0).clamp(0, 1).reshape(video.shape)
        self.log("train/psnr", psnr(decoded, video).mean().float(), batch_size=b)
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
        decoded = torch.cat([reconstruct(self.vae, v[None]) for v in video])
        values = psnr(decoded, video).mean(1)
        figures = {"vae_scaling_factor": scale, "vae_eval_psnr_db": float(values.mean()),
                   "vae_eval_psnr_min_db": float(values.min()), "vae_eval_clips": len(values),
                   "vae_eval_colour_kept": colour_kept(decoded, video)}
        if self.teacher is not None:
            figures.update(teacher_steps=self.teacher_steps, teacher_minutes=round(float(self.teacher_seconds) / 60, 2))
        log.info("VAE export: scaling factor %.4f, eval PSNR %.2f dB on %d held-out clips -> %s",
                 scale, figures["vae_eval_psnr_db"], len(values), out / "vae")
        return figures
