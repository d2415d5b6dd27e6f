"""SVD's EDM training objective (v-scaling), its conditioning, and the masked loss of ReCapture.

The objective must agree with the stock sampler (``EulerDiscreteScheduler`` with SVD's config):

* ``sigma ~ LogNormal(p_mean, p_std)``; ``noisy = z0 + sigma * eps``;
* ``c_in = 1 / sqrt(sigma^2 + 1)``, ``c_noise = 0.25 ln(sigma)`` (the UNet's timestep),
  ``c_skip = 1 / (sigma^2 + 1)``, ``c_out = -sigma / sqrt(sigma^2 + 1)``;
* UNet input = channel concat of ``c_in * noisy`` and the conditioning latents (8 channels);
* ``denoised = c_skip * noisy + c_out * F(...)``; weight ``lambda = (sigma^2 + 1) / sigma^2``;
* loss = mean over valid elements of ``lambda * (denoised - z0)^2``.

Conditioning is built as the pipeline builds it: the image prompt (ReCapture: the first anchor
frame) gives a CLIP embedding (a single token) and noise-augmented, *unscaled* VAE latents
(posterior mode) repeated over frames; added time ids are ``[fps - 1, motion_bucket_id,
noise_aug_strength]`` (:class:`MicroConditioning`, shared with sampling). Conditioning dropout zeroes both (as classifier-free guidance does at
sampling) so guidance stays valid.

Masked loss: masked-out latents are replaced by zero (the latent mean) *before* noising, so their
content influences neither the loss nor any gradient, and the per-element loss is averaged over
valid elements only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from recapture.adaptation.clip import clip_preprocess
from recapture.utils import RecaptureError

__all__ = [
    "ConditionBatch",
    "EDMConfig",
    "LossOutput",
    "MicroConditioning",
    "added_time_ids",
    "edm_loss",
    "edm_scalings",
    "encode_condition",
    "encode_latents",
    "mask_to_latent",
    "sample_sigma",
    "vae_factor",
]


@dataclass
class MicroConditioning:
    """SVD's micro-conditioning: the UNet's added time ids ``[fps - 1, motion_bucket_id, noise_aug_strength]``.

    The one definition of these settings for training and sampling: :class:`EDMConfig` (the
    objective) and ``recapture.sampling.DenoiseConfig`` (generation, refinement) both derive from
    it, so the fields, their defaults (the pipeline's), their validation and the time ids are written
    once, while the YAML keys stay flat and unchanged (``model.objective.fps``,
    ``model.sampling.motion_bucket_id``, ... in configs, saved run ``config.yaml`` files and the
    shipped prior's ``pretrain.json``). ``ReCaptureModule`` makes sampling use the objective's values
    (see ``recapture.training.module``).

    Attributes:
        fps: frames per second fed to the micro-conditioning (the UNet sees ``fps - 1``, as in the
            pipeline).
        motion_bucket_id: motion micro-conditioning; higher means more motion (pipeline default 127).
        noise_aug_strength: std of the noise added to the image prompt before VAE encoding (pipeline
            default 0.02).
    """

    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``RecaptureError`` naming the first invalid micro-conditioning setting."""
        if self.fps < 1:
            raise RecaptureError(f"fps must be >= 1 (the UNet is conditioned on fps - 1), got {self.fps}")
        if self.noise_aug_strength < 0:
            raise RecaptureError(f"noise_aug_strength must be >= 0, got {self.noise_aug_strength}")

    @property
    def micro(self) -> MicroConditioning:
        """These three settings alone, as a plain :class:`MicroConditioning` (a copy)."""
        return MicroConditioning(self.fps, self.motion_bucket_id, self.noise_aug_strength)

    def time_ids(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """The UNet's ``added_time_ids``, ``(batch, 3)`` (:func:`added_time_ids` of these settings)."""
        return added_time_ids(self.fps, self.motion_bucket_id, self.noise_aug_strength, batch, device, dtype)


@dataclass
class EDMConfig(MicroConditioning):
    """Settings of the SVD fine-tuning objective.

    The micro-conditioning the UNet is trained with (``fps``, ``motion_bucket_id``,
    ``noise_aug_strength``) is :class:`MicroConditioning`'s; :attr:`micro` gives it alone.

    Attributes:
        p_mean: mean of ln(sigma) of the training noise levels.
        p_std: standard deviation of ln(sigma).
        conditioning_dropout: probability of zeroing the image conditioning of a sample.
        mask_threshold: fraction of valid pixels a latent cell needs to count as valid.
    """

    p_mean: float = 0.7
    p_std: float = 1.6
    conditioning_dropout: float = 0.1
    mask_threshold: float = 1.0

    def validate(self, section: str = "model.objective") -> None:
        """Raise :class:`RecaptureError` naming the bad value (called before any work is done); the
        micro-conditioning (fps, noise_aug_strength) is :class:`MicroConditioning`'s check."""
        super().validate()
        checks = (
            ("p_mean", math.isfinite(self.p_mean), "a finite number (SVD: 0.7)"),
            ("p_std", math.isfinite(self.p_std) and self.p_std > 0, "> 0 (SVD: 1.6)"),
            ("conditioning_dropout", 0.0 <= self.conditioning_dropout <= 1.0, "in [0, 1]"),
            ("mask_threshold", 0.0 < self.mask_threshold <= 1.0, "in (0, 1]"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise RecaptureError(f"{section}.{name}={getattr(self, name)!r} must be {rule}")


@dataclass
class ConditionBatch:
    """The image-prompt conditioning of SVD.

    Attributes:
        cond_latents: ``(B, 4, h, w)`` VAE posterior mode of the noise-augmented image (not scaled).
        image_embeds: ``(B, 1, D)`` CLIP image embedding.
    """

    cond_latents: torch.Tensor
    image_embeds: torch.Tensor

    def to(self, *args, **kwargs) -> ConditionBatch:
        """Move/cast both tensors (``Tensor.to`` arguments)."""
        return ConditionBatch(self.cond_latents.to(*args, **kwargs), self.image_embeds.to(*args, **kwargs))


class LossOutput(NamedTuple):
    """Result of :func:`edm_loss`.

    Attributes:
        loss: scalar, weighted mean over valid elements.
        sigma: ``(B,)`` noise levels used.
        per_element: ``(B, T, C, h, w)`` weighted squared error before masking.
        dropped: ``(B,)`` bool, samples whose conditioning was dropped.
    """

    loss: torch.Tensor
    sigma: torch.Tensor
    per_element: torch.Tensor
    dropped: torch.Tensor


def _check_video(frames: torch.Tensor, name: str) -> None:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise RecaptureError(f"{name} must have shape (T, 3, H, W) in [0, 1], got {tuple(frames.shape)}")


def vae_factor(vae: nn.Module | Sequence[int]) -> int:
    """Pixels per latent along each axis (8 for SVD's VAE): a halving per VAE level after the first.

    Args:
        vae: the VAE, or its ``block_out_channels``.
    """
    channels = vae if isinstance(vae, Sequence) else vae.config.block_out_channels
    return 2 ** (len(channels) - 1)


def _check_divisible(h: int, w: int, factor: int) -> None:
    if h % factor or w % factor:
        raise RecaptureError(
            f"frame size {h}x{w} is not a multiple of the VAE factor {factor}; resize to multiples of 64"
        )


@torch.no_grad()
def encode_latents(
    vae: nn.Module,
    frames: torch.Tensor,
    chunk_size: int = 8,
    sample_posterior: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Encode frames to SVD latents scaled by ``vae.config.scaling_factor``.

    Args:
        vae: the SVD VAE.
        frames: ``(T, 3, H, W)`` in [0, 1]; H and W multiples of the VAE factor (8).
        chunk_size: frames per VAE call (memory).
        sample_posterior: draw from the posterior instead of taking its mode. The mode is the
            default: it is deterministic, and random tiny VAEs have a wide posterior.
        generator: randomness of the posterior sample.

    Returns:
        ``(T, 4, H/8, W/8)`` float32 latents.
    """
    _check_video(frames, "frames")
    _check_divisible(frames.shape[-2], frames.shape[-1], vae_factor(vae))
    dtype = next(vae.parameters()).dtype
    out = []
    for chunk in frames.split(max(1, chunk_size)):
        dist = vae.encode((chunk * 2.0 - 1.0).to(dtype)).latent_dist
        z = dist.sample(generator) if sample_posterior else dist.mode()
        out.append(z.float())
    return torch.cat(out) * float(vae.config.scaling_factor)


@torch.no_grad()
def encode_condition(
    vae: nn.Module,
    image_encoder: nn.Module,
    image: torch.Tensor,
    noise_aug_strength: float,
    generator: torch.Generator | None = None,
) -> ConditionBatch:
    """Build SVD's image-prompt conditioning exactly as ``StableVideoDiffusionPipeline`` does.

    Args:
        vae: the SVD VAE.
        image_encoder: the CLIP vision model with projection.
        image: ``(B, 3, H, W)`` in [0, 1], the image prompt (ReCapture: first anchor frame).
        noise_aug_strength: std of the Gaussian noise added to the image in [-1, 1].
        generator: randomness of the noise augmentation.

    Returns:
        ``ConditionBatch`` with ``cond_latents`` ``(B, 4, H/8, W/8)`` (float32, not scaled) and
        ``image_embeds`` ``(B, 1, D)`` (float32).
    """
    return ConditionBatch(
        cond_latents=encode_condition_latents(vae, image, noise_aug_strength, generator),
        image_embeds=encode_image_embeds(image_encoder, image),
    )


def encode_image_embeds(image_encoder: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """CLIP image embedding of the prompt, ``(B, 3, H, W)`` in [0, 1] -> ``(B, 1, D)`` float32 (no randomness)."""
    _check_image(image)
    enc_dtype = next(image_encoder.parameters()).dtype
    return image_encoder(clip_preprocess(image.float()).to(enc_dtype)).image_embeds.float().unsqueeze(1)


def encode_condition_latents(
    vae: nn.Module, image: torch.Tensor, noise_aug_strength: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise-augmented VAE latents of the prompt (mode, not scaled): ``(B, 3, H, W)`` -> ``(B, 4, H/8, W/8)``."""
    _check_image(image)
    _check_divisible(image.shape[-2], image.shape[-1], vae_factor(vae))
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=torch.float32)
    noisy = image.float() * 2.0 - 1.0 + noise_aug_strength * noise
    vae_dtype = next(vae.parameters()).dtype
    return vae.encode(noisy.to(vae_dtype)).latent_dist.mode().float()


def _check_image(image: torch.Tensor) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise RecaptureError(f"image must have shape (B, 3, H, W) in [0, 1], got {tuple(image.shape)}")


def added_time_ids(
    fps: int,
    motion_bucket_id: int,
    noise_aug_strength: float,
    batch: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """SVD's micro-conditioning ``[fps - 1, motion_bucket_id, noise_aug_strength]`` per sample.

    Returns:
        ``(batch, 3)``; the pipeline subtracts 1 from ``fps`` in the same way.
    """
    row = torch.tensor([fps - 1, motion_bucket_id, noise_aug_strength], dtype=dtype, device=device)
    return row.unsqueeze(0).repeat(batch, 1)


def mask_to_latent(mask: torch.Tensor, factor: int, threshold: float = 1.0) -> torch.Tensor:
    """Downsample a pixel validity mask to latent cells.

    A cell is valid iff the fraction of its ``factor x factor`` valid pixels is >= ``threshold``
    (1.0: every pixel valid).

    Args:
        mask: ``(..., 1, H, W)`` bool or {0, 1}; H and W multiples of ``factor``.
        factor: pixels per latent (the VAE factor, 8 for SVD).
        threshold: in (0, 1].

    Returns:
        ``(..., 1, H/factor, W/factor)`` float {0, 1}.
    """
    if mask.ndim < 3 or mask.shape[-3] != 1:
        raise RecaptureError(f"mask must have shape (..., 1, H, W), got {tuple(mask.shape)}")
    if not 0.0 < threshold <= 1.0:
        raise RecaptureError(f"mask threshold must be in (0, 1], got {threshold}")
    h, w = mask.shape[-2:]
    _check_divisible(h, w, factor)
    lead = mask.shape[:-3]
    counts = F.avg_pool2d(mask.reshape(-1, 1, h, w).float(), factor, divisor_override=1)
    need = threshold * factor * factor - 1e-6
    return (counts >= need).float().reshape(*lead, 1, h // factor, w // factor)


def sample_sigma(
    batch: int,
    config: EDMConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``(batch,)`` training noise levels, ``sigma = exp(p_mean + p_std * n)``."""
    n = torch.randn(batch, generator=generator, device=device)
    return torch.exp(config.p_mean + config.p_std * n)


def edm_scalings(
    sigma: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM v-scaling coefficients of SVD.

    Args:
        sigma: ``(B,)`` noise levels.

    Returns:
        ``(c_in, c_skip, c_out, c_noise, weight)``, each ``(B,)``.
    """
    s2 = sigma**2 + 1.0
    return s2.rsqrt(), 1.0 / s2, -sigma * s2.rsqrt(), 0.25 * sigma.log(), s2 / sigma**2


def _check_batch(latents, cond_latents, image_embeds, time_ids, mask, sigma, drop) -> None:  # noqa: ANN001
    if latents.ndim != 5:
        raise RecaptureError(f"latents must have shape (B, T, C, h, w), got {tuple(latents.shape)}")
    b, t, c, h, w = latents.shape
    expected = {
        "cond_latents": (cond_latents, (b, c, h, w)),
        "time_ids": (time_ids, (b, 3)),
        "mask": (mask, (b, t, 1, h, w)),
        "sigma": (sigma, (b,)),
        "drop_conditioning": (drop, (b,)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise RecaptureError(
                f"{name} must have shape {shape} for latents {tuple(latents.shape)}, got {tuple(tensor.shape)}"
            )
    if image_embeds.ndim != 3 or image_embeds.shape[0] != b:
        raise RecaptureError(f"image_embeds must have shape ({b}, 1, D), got {tuple(image_embeds.shape)}")


def edm_loss(
    unet: nn.Module,
    latents: torch.Tensor,
    cond_latents: torch.Tensor,
    image_embeds: torch.Tensor,
    time_ids: torch.Tensor,
    mask: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    config: EDMConfig | None = None,
    generator: torch.Generator | None = None,
    drop_conditioning: torch.Tensor | None = None,
    check_mask: bool = True,
) -> LossOutput:
    """SVD's EDM denoising loss, optionally masked to the valid latents.

    Args:
        unet: the SVD UNet (any active adapters / bypass apply).
        latents: ``(B, T, 4, h, w)`` clean scaled latents z0.
        cond_latents: ``(B, 4, h, w)`` conditioning latents (:func:`encode_condition`).
        image_embeds: ``(B, 1, D)`` CLIP embeddings.
        time_ids: ``(B, 3)`` added time ids (:func:`added_time_ids`).
        mask: ``(B, T, 1, h, w)`` {0, 1} latent validity (:func:`mask_to_latent`); None: all valid.
        sigma: ``(B,)`` noise levels; None draws them from LogNormal(p_mean, p_std).
        config: objective settings.
        generator: randomness of sigma, noise and conditioning dropout (reproducible losses).
        drop_conditioning: ``(B,)`` bool, which samples lose their conditioning; None draws
            them with probability ``config.conditioning_dropout``.
        check_mask: raise if ``mask`` has no valid element. Reading that answer waits for the device
            (a host-device sync per call); a training loop whose masks were checked once when they
            were encoded (:func:`~recapture.adaptation.encoding.encode_training_tensors`) turns it off.

    Returns:
        ``LossOutput(loss, sigma, per_element, dropped)``.

    Raises:
        RecaptureError: shape mismatch, or a mask without any valid element.
    """
    config = config or EDMConfig()
    _check_batch(latents, cond_latents, image_embeds, time_ids, mask, sigma, drop_conditioning)
    b, t, c = latents.shape[:3]
    device = latents.device
    z0 = latents.float()
    if mask is not None:
        mask = mask.to(device=device, dtype=torch.float32)
        if check_mask and mask.device.type != "meta" and not bool(mask.any()):  # meta: FLOP counting
            raise RecaptureError(
                "the validity mask has no valid latent in this batch; every element would be masked out "
                "(check the anchor masks or lower EDMConfig.mask_threshold)"
            )
        z0 = z0 * mask  # masked-out content must not reach the UNet
    if sigma is None:
        sigma = sample_sigma(b, config, generator, device)
    sigma = sigma.to(device=device, dtype=torch.float32)
    if drop_conditioning is None:
        drop = torch.rand(b, generator=generator, device=device) < config.conditioning_dropout
    else:
        drop = drop_conditioning.to(device=device, dtype=torch.bool)
    eps = torch.randn(z0.shape, generator=generator, device=device, dtype=torch.float32)

    c_in, c_skip, c_out, c_noise, weight = (v.view(b, 1, 1, 1, 1) for v in edm_scalings(sigma))
    noisy = z0 + sigma.view(b, 1, 1, 1, 1) * eps
    keep = (~drop).float()
    cond = (cond_latents.float() * keep.view(b, 1, 1, 1)).unsqueeze(1).expand(b, t, *cond_latents.shape[1:])
    embeds = image_embeds.float() * keep.view(b, 1, 1)

    dtype = next(unet.parameters()).dtype
    unet_in = torch.cat([c_in * noisy, cond], dim=2).to(dtype)
    out = unet(
        unet_in,
        c_noise.view(b),  # float32 like the sampler's continuous timesteps
        encoder_hidden_states=embeds.to(dtype),
        added_time_ids=time_ids.to(device=device, dtype=dtype),
        return_dict=False,
    )[0]
    denoised = c_skip * noisy + c_out * out.float()
    per_element = weight * (denoised - z0) ** 2
    if mask is None:
        loss = per_element.mean()
    else:
        loss = (per_element * mask).sum() / (mask.sum() * c)
    return LossOutput(loss=loss, sigma=sigma, per_element=per_element, dropped=drop)
