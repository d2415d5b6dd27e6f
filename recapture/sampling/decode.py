"""Latents to frames with SVD's temporal VAE decoder, in chunks of frames."""

from __future__ import annotations

import inspect

import torch

from recapture.utils import RecaptureError


@torch.no_grad()
def decode_latents(
    vae: torch.nn.Module, latents: torch.Tensor, num_frames: int, chunk_size: int = 8
) -> torch.Tensor:
    """Decode scaled latents to a video, ``chunk_size`` frames at a time (as the SVD pipeline does).

    The temporal decoder mixes information across the frames of one chunk only, so smaller chunks
    use less memory at the price of slightly less smoothness across chunk borders.

    Args:
        vae: ``AutoencoderKLTemporalDecoder``.
        latents: (T, 4, h, w) latents scaled by ``vae.config.scaling_factor``.
        num_frames: T, checked against ``latents``.
        chunk_size: frames per decoder call (>= 1).

    Returns:
        (T, 3, H, W) float32 video in [0, 1], on the latents' device.
    """
    if latents.ndim != 4 or latents.shape[1] != vae.config.latent_channels:
        raise RecaptureError(
            f"latents must be (T, {vae.config.latent_channels}, h, w), got {tuple(latents.shape)}"
        )
    if latents.shape[0] != num_frames:
        raise RecaptureError(f"latents hold {latents.shape[0]} frames but num_frames={num_frames}")
    if chunk_size < 1:
        raise RecaptureError(f"chunk_size must be >= 1, got {chunk_size}")
    accepts_num_frames = "num_frames" in inspect.signature(vae.decode).parameters
    scaled = 1 / vae.config.scaling_factor * latents  # same float ops as the pipeline
    chunks = []
    for start in range(0, num_frames, chunk_size):
        part = scaled[start : start + chunk_size].to(vae.dtype)
        kwargs = {"num_frames": part.shape[0]} if accepts_num_frames else {}
        chunks.append(vae.decode(part, **kwargs).sample.float())
    frames = torch.cat(chunks)
    return (frames / 2 + 0.5).clamp(0, 1)
