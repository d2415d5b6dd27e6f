"""A tiny randomly initialised SVD set: the real classes with small numbers (tests, offline demo).

Shapes from ``shared/specs/svd-adaptation.md``: the UNet, the temporal VAE and the CLIP vision
tower are the real diffusers/transformers classes, so everything that runs on them runs on the
real weights too; a few MB, a 2-step 4-frame 64x64 sampling run takes well under a second on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from recapture.adaptation.clip import CLIP_SIZE, default_feature_extractor
from recapture.adaptation.components import PeftUNetSpatioTemporalConditionModel, SVDComponents, svd_scheduler

__all__ = ["build_tiny_components"]


def build_tiny_components(seed: int = 0) -> SVDComponents:
    """Build a tiny randomly initialised SVD set in memory (a few MB, the real classes, small numbers).

    The VAE has four 32-channel blocks (8x downsampling like SVD) and its ``scaling_factor`` is set
    so that latents of natural-looking images have about unit standard deviation, as real SVD
    latents do (with the default 0.18215 almost every noise level would be pure noise).

    Args:
        seed: seed of the random weights.

    Returns:
        the components; ``num_frames_default`` is 14.
    """
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = PeftUNetSpatioTemporalConditionModel(
            sample_size=8,
            in_channels=8,
            out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=32,
            num_attention_heads=(2, 4),
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=24,
            num_frames=14,
        )
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=(32, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            layers_per_block=1,
            latent_channels=4,
            sample_size=64,
        )
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                projection_dim=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=CLIP_SIZE,
                patch_size=32,
            )
        )
        vae.register_to_config(scaling_factor=_unit_std_scaling(vae))
    finally:
        torch.random.set_rng_state(gen_state)
    for module in (unet, vae, image_encoder):
        module.eval()
    return SVDComponents(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        scheduler=svd_scheduler(),
        feature_extractor=default_feature_extractor(),
        num_frames_default=14,
    )


@torch.no_grad()
def _unit_std_scaling(vae: AutoencoderKLTemporalDecoder) -> float:
    """Scaling factor giving posterior means of smooth random images a unit standard deviation."""
    gen = torch.Generator().manual_seed(1234)
    coarse = torch.rand(8, 3, 4, 4, generator=gen)
    images = F.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    latents = vae.encode(images * 2 - 1).latent_dist.mode()
    return float(1.0 / latents.std().clamp_min(1e-6))
