"""SVD conditioning for sampling, built exactly as ``StableVideoDiffusionPipeline`` builds it.

The image prompt gives two signals: its CLIP image embedding (one cross-attention token) and its
VAE latents after noise augmentation (concatenated to every frame's noisy latents). With
classifier-free guidance the unconditional half of the batch zeroes both, and the guidance scale
ramps linearly over frames from ``min_guidance_scale`` to ``max_guidance_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recapture.adaptation import SVDComponents, encode_condition
from recapture.adaptation.encoding import vae_upcast
from recapture.sampling.config import DenoiseConfig


@dataclass
class Conditioning:
    """Everything the UNet sees besides the noisy latents, batched for the guidance passes.

    Args:
        image_embeds: (B, 1, D) CLIP image embedding; B = 2 (unconditional, conditional) with
            guidance, else 1.
        cond_latents: (B, T, 4, h, w) noise-augmented image-prompt latents (not scaled), per frame.
        time_ids: (B, 3) ``[fps - 1, motion_bucket_id, noise_aug_strength]``.
        guidance: (1, T, 1, 1, 1) per-frame guidance scale, or None without guidance.
    """

    image_embeds: torch.Tensor
    cond_latents: torch.Tensor
    time_ids: torch.Tensor
    guidance: torch.Tensor | None


def guidance_ramp(min_scale: float, max_scale: float, num_frames: int) -> torch.Tensor:
    """Per-frame guidance scales, linear from the first to the last frame (as SVD samples).

    Returns:
        (1, T, 1, 1, 1) float32 tensor.
    """
    return torch.linspace(min_scale, max_scale, num_frames).reshape(1, num_frames, 1, 1, 1)


@torch.no_grad()
def build_conditioning(
    components: SVDComponents,
    image: torch.Tensor,
    num_frames: int,
    config: DenoiseConfig,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> Conditioning:
    """Encode the image prompt and micro-conditioning the way the stock pipeline does.

    The prompt noise is drawn from ``generator`` first (before any latent noise), as the pipeline
    does, so that a pipeline call with an equally seeded generator on the same device draws the same
    numbers.

    Args:
        components: ``SVDComponents`` (uses ``vae`` and ``image_encoder``).
        image: (3, H, W) image prompt in [0, 1].
        num_frames: T, frames to generate.
        config: conditioning and guidance settings.
        generator: random generator on ``device``.
        device: execution device.
        dtype: dtype of the UNet inputs.

    Returns:
        The batched ``Conditioning``.
    """
    image = image.unsqueeze(0).to(device=device, dtype=torch.float32)
    with vae_upcast(components.vae):
        cond = encode_condition(
            components.vae, components.image_encoder, image, config.noise_aug_strength, generator=generator
        )
    image_embeds = cond.image_embeds.to(dtype)
    cond_latents = cond.cond_latents.to(dtype).unsqueeze(1).repeat(1, num_frames, 1, 1, 1)
    time_ids = config.time_ids(1, device=device, dtype=dtype)  # its MicroConditioning
    guidance = None
    if config.uses_guidance:
        image_embeds = torch.cat([torch.zeros_like(image_embeds), image_embeds])
        cond_latents = torch.cat([torch.zeros_like(cond_latents), cond_latents])
        time_ids = torch.cat([time_ids, time_ids])
        guidance = guidance_ramp(config.min_guidance_scale, config.max_guidance_scale, num_frames)
        guidance = guidance.to(device=device, dtype=dtype)
    return Conditioning(image_embeds, cond_latents, time_ids, guidance)
