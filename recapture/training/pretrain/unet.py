"""Stage 2 of the prior: the spatio-temporal UNet, trained with SVD's own objective on cached latents.

* Latents: the frozen VAE of stage 1 (``vae_dir``) encodes a fixed pool of training clips once
  (:class:`~recapture.training.pretrain.data.PretrainDataModule` caches them as safetensors).
* Objective: :func:`recapture.adaptation.edm_loss`, exactly what the stock sampler inverts
  (EDM v-scaling, ``sigma ~ LogNormal(p_mean, p_std)``), conditioned like the SVD pipeline: the
  first frame's noise-augmented VAE latents (``condition_draws`` draws cached per clip, one picked
  per step) concatenated to every frame, and its CLIP image embedding as the single cross-attention
  token; ``conditioning_dropout`` zeroes both for a sample (classifier-free guidance stays valid).
* Image encoder: a **fixed random** ``CLIPVisionModelWithProjection`` (seeded, never trained).
  Why: SVD keeps its CLIP frozen too, and ReCapture's fine-tuning never trains it, so the UNet only
  has to learn to read a fixed embedding; the first frame reaches the UNet in full through the
  concatenated latents anyway; a fixed encoder lets the embeddings be cached with the latents (no
  224x224 CLIP pass per step) and keeps the shipped set reproducible from its seed. The price: the
  token carries a random (but deterministic and image-dependent) feature of the frame, not
  semantics; the export reports how much it varies between images (``clip_embedding_spread``).
* Micro-conditioning (fps, motion bucket, noise augmentation) is constant in training
  (``objective``'s values), so sampling should use the same (the pipeline defaults 7 / 127 / 0.02).
* Validation: ``val/loss`` = the EDM loss on the held-out pool at fixed noise levels and noise
  (deterministic), plus ``val/loss_sigma_<s>`` per level.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLTemporalDecoder
from lightning.pytorch.cli import OptimizerCallable

from recapture.adaptation import (
    EDMConfig,
    edm_loss,
    encode_condition_latents,
    encode_image_embeds,
    encode_latents,
    save_components,
    vae_factor,
)
from recapture.adaptation.placement import placed
from recapture.adaptation.prior import (
    ImageEncoderSize,
    UNetSize,
    assemble_components,
    count_parameters,
    weights_bytes,
)
from recapture.training.pretrain.base import LRSchedule, PriorStage, default_optimizer
from recapture.utils import RecaptureError, hash_inputs

log = logging.getLogger(__name__)

EVAL_SIGMAS = (0.05, 0.3, 1.0, 3.0, 10.0)


def _prior_objective() -> EDMConfig:
    return EDMConfig(p_mean=0.7, p_std=1.6, conditioning_dropout=0.1)


def stage_vae_path(vae_dir: str | Path) -> Path:
    """The VAE folder of a VAE-stage export (``<vae_dir>/vae``), or ``vae_dir`` itself when it is one."""
    root = Path(vae_dir).expanduser()
    return root / "vae" if (root / "vae" / "config.json").is_file() else root


def load_stage_vae(vae_dir: str | Path) -> AutoencoderKLTemporalDecoder:
    """The VAE written by the VAE stage (``<vae_dir>/vae``, or ``vae_dir`` itself), frozen, in eval mode."""
    root = Path(vae_dir).expanduser()
    path = stage_vae_path(vae_dir)
    if not (path / "config.json").is_file():
        raise RecaptureError(
            f"model.vae_dir={str(vae_dir)!r} holds no VAE (expected {root / 'vae' / 'config.json'}); run the VAE "
            "stage first (recapture pretrain --config configs/pretrain/recapture-tiny-vae.yaml) or point "
            "vae_dir at its export folder"
        )
    vae = AutoencoderKLTemporalDecoder.from_pretrained(str(path), local_files_only=True)
    if float(vae.config.scaling_factor) == 0.18215:
        log.warning("the VAE in %s has SVD's default scaling_factor 0.18215: was it exported by the VAE stage?", path)
    return vae.requires_grad_(False).eval()


class UNetStage(PriorStage):
    """Train the prior's UNet (``UNetSpatioTemporalConditionModel``) from scratch on the VAE stage's latents.

    Args:
        vae_dir: the VAE stage's export folder (holding ``vae/``), or a VAE folder itself.
        unet: size of the UNet (levels, channels, heads, layers).
        image_encoder: size of the fixed random CLIP image encoder.
        image_encoder_seed: seed of the image encoder's fixed weights.
        seed: seed of the UNet's initial weights.
        objective: EDM noise distribution, micro-conditioning, noise augmentation and conditioning
            dropout (default: SVD's P_mean 0.7, P_std 1.6, dropout 0.1).
        condition_draws: noise-augmented first-frame encodings cached per clip.
        card_samples: held-out clips sampled at export for the model card's figures and ``samples.png``.
        card_steps: Euler steps of those samples.
        optimizer: optimizer factory (default AdamW, lr 1e-3).
        lr_schedule: warm-up and decay of the learning rate.
    """

    stage = "unet"
    uses_latent_cache = True

    def __init__(
        self,
        vae_dir: str,
        unet: UNetSize = UNetSize(),
        image_encoder: ImageEncoderSize = ImageEncoderSize(),
        image_encoder_seed: int = 0,
        seed: int = 0,
        objective: EDMConfig = _prior_objective(),
        condition_draws: int = 2,
        card_samples: int = 4,
        card_steps: int = 12,
        optimizer: OptimizerCallable = default_optimizer,
        lr_schedule: LRSchedule = LRSchedule(),
    ) -> None:
        super().__init__(optimizer, replace(lr_schedule))
        if condition_draws < 1:
            raise RecaptureError(f"model.condition_draws={condition_draws} must be >= 1")
        self.vae_dir, self.unet_size = str(vae_dir), replace(unet)
        self.encoder_size, self.encoder_seed, self.seed = replace(image_encoder), image_encoder_seed, seed
        self.objective, self.condition_draws = replace(objective), condition_draws
        self.card_samples, self.card_steps = card_samples, card_steps
        self.image_encoder = self.encoder_size.build(image_encoder_seed).requires_grad_(False).eval()
        self._frozen: dict[str, AutoencoderKLTemporalDecoder] = {}  # the VAE: not a submodule, not in checkpoints
        self.unet: torch.nn.Module | None = None

    # ------------------------------------------------------------------ parts
    @property
    def vae(self) -> AutoencoderKLTemporalDecoder:
        """The frozen VAE of stage 1 (loaded from ``vae_dir`` on first use; not a registered submodule)."""
        if "vae" not in self._frozen:
            self._frozen["vae"] = load_stage_vae(self.vae_dir)
        return self._frozen["vae"]

    def configure_model(self) -> None:
        """Build the UNet for the VAE's latent channels and the image encoder's embedding width."""
        if self.unet is None:
            self.unet = self.unet_size.build(
                self.vae.config.latent_channels, self.encoder_size.projection_dim, num_frames=14, sample_size=8,
                seed=self.seed,
            )
            self.unet.train()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        self.configure_model()
        return list(self.unet.parameters())

    def cache_id(self) -> str:
        """Identifies the encoders and the conditioning (the data module keys the latent cache by it)."""
        weights = stage_vae_path(self.vae_dir)
        files = sorted(p for p in weights.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json"))
        return hash_inputs(
            [(p.name, p) for p in files], asdict(self.encoder_size), self.encoder_seed,
            self.objective.noise_aug_strength, self.condition_draws,
        )

    # ------------------------------------------------------------------ encoding (latent cache)
    @torch.no_grad()
    def encode_clips(self, video: torch.Tensor, index: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """Encode clips for the latent cache.

        Args:
            video: ``(B, T, 3, H, W)`` in [0, 1].
            index: ``(B,)`` clip indices (seed the noise augmentation, so the cache is reproducible).
            device: where to encode.

        Returns:
            ``latents`` ``(B, T, C, h, w)`` (scaled, posterior mode), ``cond_latents`` ``(B, D, C, h, w)``
            (noise-augmented first frame, unscaled, D = ``condition_draws``), ``image_embeds`` ``(B, 1, E)``.
        """
        with placed([self.vae, self.image_encoder], device):
            video = video.to(device)
            first = video[:, 0]
            latents = torch.stack([encode_latents(self.vae, clip, chunk_size=16) for clip in video])
            g = torch.Generator(device).manual_seed(int(index[0]) * 7919 + 17)
            draws = [encode_condition_latents(self.vae, first, self.objective.noise_aug_strength, g)
                     for _ in range(self.condition_draws)]
            embeds = encode_image_embeds(self.image_encoder, first)
        return {"latents": latents.cpu(), "cond_latents": torch.stack(draws, 1).cpu(), "image_embeds": embeds.cpu()}

    # ------------------------------------------------------------------ training
    def _condition(self, batch: dict[str, torch.Tensor], pick: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond = batch["cond_latents"][torch.arange(len(pick), device=pick.device), pick]
        return cond, batch["image_embeds"]

    def _time_ids(self, batch_size: int, like: torch.Tensor) -> torch.Tensor:
        return self.objective.time_ids(batch_size).to(like)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        latents = batch["latents"]
        b = latents.shape[0]
        pick = torch.randint(0, batch["cond_latents"].shape[1], (b,), device=latents.device)
        cond, embeds = self._condition(batch, pick)
        drop = torch.rand(b, device=latents.device) < self.objective.conditioning_dropout
        out = edm_loss(self.unet, latents, cond, embeds, self._time_ids(b, latents), config=self.objective,
                       drop_conditioning=drop)
        self.log_loss(out.loss, b)
        self.log_lr(b)
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        latents = batch["latents"]
        b = latents.shape[0]
        pick = torch.zeros(b, dtype=torch.long, device=latents.device)
        cond, embeds = self._condition(batch, pick)
        keep = torch.zeros(b, dtype=torch.bool, device=latents.device)
        total = 0.0
        for k, sigma in enumerate(EVAL_SIGMAS):
            g = torch.Generator(latents.device).manual_seed(10_000 * k + batch_idx)
            out = edm_loss(self.unet, latents, cond, embeds, self._time_ids(b, latents),
                           sigma=torch.full((b,), sigma), config=self.objective, generator=g, drop_conditioning=keep)
            self.log(f"val/loss_sigma_{sigma:g}", out.loss, sync_dist=True, batch_size=b)
            total = total + out.loss
        self.log("val/loss", total / len(EVAL_SIGMAS), sync_dist=True, batch_size=b, prog_bar=True)

    # ------------------------------------------------------------------ export
    def components(self, num_frames: int, latent_height: int) -> Any:
        """The trained set as ``SVDComponents`` (UNet config records the clip length and latent size)."""
        self.configure_model()
        self.unet.register_to_config(num_frames=num_frames, sample_size=latent_height)
        return assemble_components(self.vae, self.unet, self.image_encoder, num_frames)

    def describe(self) -> dict[str, Any]:
        self.configure_model()
        parts = {"unet": self.unet, "vae": self.vae, "image_encoder": self.image_encoder}
        info = {name: {"parameters": count_parameters(m), "bytes": weights_bytes(m)} for name, m in parts.items()}
        info["unet"].update(asdict(self.unet_size))
        info["image_encoder"].update(asdict(self.encoder_size), seed=self.encoder_seed, trained=False)
        return info

    @torch.no_grad()
    def export(self, out: Path, record: dict[str, Any]) -> dict[str, Any]:
        """Save the complete set (diffusers pipeline layout) into ``out`` and sample held-out clips for the card."""
        from recapture.training.pretrain.quality import sample_quality, write_strip

        data = self.trainer.datamodule
        factor = vae_factor(self.vae)
        components = self.components(data.num_frames, data.height // factor)
        training = [(m, m.training) for m in (self.unet, self.vae, self.image_encoder)]
        try:
            save_components(components, out)
            clips = data.eval_video(max(1, min(self.card_samples, data.eval_clips)))
            quality = sample_quality(components, clips, num_inference_steps=self.card_steps)
            write_strip(out / "samples.png", clips, quality.pop("frames"))
        finally:
            for m, flag in training:
                m.train(flag)
        quality["clip_embedding_spread"] = self.embedding_spread()
        log.info("UNet export: %s", {k: round(v, 3) for k, v in quality.items()})
        return quality

    def embedding_spread(self) -> float:
        """How much the fixed image encoder's embedding varies between held-out first frames.

        Mean distance of the cached held-out embeddings to their mean, relative to the mean's norm
        (0: the token is a constant; ~1: it varies as much as it is long).
        """
        pools = getattr(self.trainer.datamodule, "pools", {})
        if "eval" not in pools:
            return float("nan")
        embeds = pools["eval"].tensors["image_embeds"].flatten(1).double()
        mean = embeds.mean(0)
        return float((embeds - mean).norm(dim=1).mean() / mean.norm().clamp_min(1e-12))
