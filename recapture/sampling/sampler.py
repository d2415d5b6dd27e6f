"""Generation with both LoRAs and SDEdit refinement with the spatial LoRA only (paper 3.3, 4.4).

Both run the same loop (``recapture.sampling.loop.denoise``) with the same conditioning; they
differ in where the loop starts (pure noise, or encoded frames noised to a strength) and in which
LoRA adapters are active.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

from recapture.adaptation import SVDComponents, encode_latents, vae_factor
from recapture.adaptation.encoding import vae_upcast
from recapture.sampling.conditioning import build_conditioning
from recapture.sampling.config import DenoiseConfig, RefineConfig, SampleOutput, SamplingConfig
from recapture.sampling.decode import decode_latents
from recapture.sampling.loop import (
    denoise,
    fresh_scheduler,
    noise_to_step,
    partial_scheduler,
    steps_for_strength,
)
from recapture.sampling.session import sampling_session
from recapture.utils import RecaptureError, check_video

log = logging.getLogger(__name__)


def generate(
    components: SVDComponents,
    image: torch.Tensor,
    num_frames: int,
    config: SamplingConfig | None = None,
    anchor: torch.Tensor | None = None,
    adapters: Sequence[str] | None = ("spatial", "temporal"),
    progress: bool = True,
) -> SampleOutput:
    """Generate a video from an image prompt with SVD (both ReCapture LoRAs active by default).

    From pure noise this is exactly the stock ``StableVideoDiffusionPipeline`` sampling (same
    conditioning, guidance ramp, scheduler and random draws for the same seed). With
    ``config.anchor_strength`` set it starts instead from the anchor's latents noised to that
    strength (beyond the paper).

    Args:
        components: ``SVDComponents`` (``unet``, ``vae``, ``image_encoder``, ``scheduler``).
        image: (3, H, W) image prompt in [0, 1], e.g. the first anchor frame; sets the output size.
            H and W must be multiples of the VAE downsampling factor.
        num_frames: T, frames to generate.
        config: sampling settings (default ``SamplingConfig()``).
        anchor: (T, 3, H, W) anchor video in [0, 1]; used only when ``config.anchor_strength`` is set.
        adapters: LoRA adapters active while sampling (restored afterwards); None leaves the UNet's
            adapter state as it is, an empty sequence samples the base model.
        progress: show a progress bar over the denoising steps.

    Returns:
        ``SampleOutput`` with frames (T, 3, H, W) and latents (T, 4, H/f, W/f).
    """
    config = config or SamplingConfig()
    config.validate()
    if not isinstance(num_frames, int) or num_frames < 1:
        raise RecaptureError(f"num_frames must be a positive integer, got {num_frames!r}")
    height, width = _check_image(image, vae_factor(components.vae))
    if anchor is not None:
        _check_video("anchor", anchor, (num_frames, 3, height, width))
    init_video = None
    if config.anchor_strength is not None:
        if anchor is None:
            raise RecaptureError(
                f"anchor_strength={config.anchor_strength} needs the anchor video: pass anchor=(T, 3, H, W) "
                "or set anchor_strength to None to start from pure noise"
            )
        init_video = anchor
    return _sample(
        components, image, num_frames, config, adapters, init_video, config.anchor_strength, progress, "generate"
    )


def sdedit_refine(
    components: SVDComponents,
    video: torch.Tensor,
    image: torch.Tensor,
    config: RefineConfig | None = None,
    progress: bool = True,
) -> SampleOutput:
    """Refine a video with SDEdit: noise it to ``config.strength`` and denoise with ``config.adapters``.

    The ReCapture default keeps the spatial LoRA and disables the temporal one, so refinement
    sharpens frames with the subject's appearance without re-imposing the anchor's artifacts.

    Args:
        components: ``SVDComponents``.
        video: (T, 3, H, W) video in [0, 1] (the generated one).
        image: (3, H, W) image prompt in [0, 1] (the same prompt as for generation).
        config: refinement settings (default ``RefineConfig()``).
        progress: show a progress bar over the denoising steps.

    Returns:
        ``SampleOutput``; at strength 0 the frames are the input, bit for bit, and latents is None.
        Any other strength starts at the same noise level whatever ``num_inference_steps`` is
        (see :mod:`recapture.sampling.loop`).
    """
    config = config or RefineConfig()
    config.validate()
    height, width = _check_image(image, vae_factor(components.vae))
    num_frames = check_video(video, "video", fix=_VIDEO_FIX)[0]
    _check_video("video", video, (num_frames, 3, height, width))
    if steps_for_strength(config.strength, config.num_inference_steps) == 0:
        frames = video.detach().to("cpu", torch.float32, copy=True)
        return SampleOutput(frames=frames, latents=None, timings={"total_s": 0.0, "steps": 0})
    return _sample(
        components, image, num_frames, config, config.adapters, video, config.strength, progress, "refine"
    )


def _sample(
    components: SVDComponents,
    image: torch.Tensor,
    num_frames: int,
    config: DenoiseConfig,
    adapters: Sequence[str] | None,
    init_video: torch.Tensor | None,
    strength: float | None,
    progress: bool,
    desc: str,
) -> SampleOutput:
    """Conditioning, initial latents (noise, or frames noised to ``strength``), the shared loop, decoding."""
    factor = vae_factor(components.vae)
    steps = config.num_inference_steps
    start = time.perf_counter()
    with sampling_session(
        components,
        adapters,
        config.cpu_offload,
        config.forward_chunking,
        config.merge_lora,
        config.reuse_host_memory,
    ) as device:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        dtype = components.unet.dtype
        generator = torch.Generator(device).manual_seed(config.seed)
        cond = build_conditioning(components, image, num_frames, config, generator, device, dtype)
        if init_video is None:  # the full schedule, as the stock pipeline
            scheduler = fresh_scheduler(components.scheduler, steps, device)
        elif steps_for_strength(strength, steps) > 0:
            scheduler = partial_scheduler(components.scheduler, strength, steps, device)
        else:  # strength 0: the encoded video itself, decoded (no noise, no step)
            scheduler = None
        channels = components.unet.config.in_channels // 2
        shape = (1, num_frames, channels, image.shape[-2] // factor, image.shape[-1] // factor)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if init_video is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            with vae_upcast(components.vae):
                clean = encode_latents(
                    components.vae, init_video.to(device), chunk_size=config.decode_chunk_size
                )
            latents = clean.unsqueeze(0).to(dtype)
            if scheduler is not None:
                latents = noise_to_step(latents, noise, scheduler, 0)
        encoded = _clock(device)
        if scheduler is not None:
            latents = denoise(components.unet, scheduler, latents, cond, 0, progress, desc)
        denoised = _clock(device)
        frames = decode_latents(components.vae, latents[0], num_frames, config.decode_chunk_size)
        frames, latents = frames.cpu(), latents[0].float().cpu()
        done = _clock(device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    ran = 0 if scheduler is None else len(scheduler.timesteps)
    timings = {
        "encode_s": encoded - start,
        "denoise_s": denoised - encoded,
        "decode_s": done - denoised,
        "total_s": done - start,
        "steps": ran,
        "s_per_step": (denoised - encoded) / max(ran, 1),
    }
    log.info(
        "%s: %d frames %dx%d, %d steps in %.1f s (%.2f s/step), total %.1f s",
        desc,
        num_frames,
        image.shape[-2],
        image.shape[-1],
        ran,
        timings["denoise_s"],
        timings["s_per_step"],
        timings["total_s"],
    )
    return SampleOutput(frames=frames, latents=latents, timings=timings, peak_memory_bytes=peak)


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _check_range(name: str, x: torch.Tensor) -> None:
    if not torch.is_floating_point(x):
        raise RecaptureError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise RecaptureError(
            f"{name} must be in [0, 1], got values in [{lo:.3f}, {hi:.3f}]: convert uint8 with /255, "
            "[-1, 1] with (x + 1) / 2"
        )


def _check_image(image: torch.Tensor, factor: int) -> tuple[int, int]:
    if image.ndim != 3 or image.shape[0] != 3:
        raise RecaptureError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
    height, width = image.shape[-2:]
    if height % factor or width % factor:
        raise RecaptureError(
            f"image size {height}x{width} must be a multiple of the VAE factor {factor}: resize or crop it"
        )
    _check_range("image", image)
    return height, width


_VIDEO_FIX = "T = num_frames, H x W = the image prompt's size"


def _check_video(name: str, video: torch.Tensor, expected: tuple[int, int, int, int]) -> None:
    check_video(video, name, shape=expected, fix=_VIDEO_FIX)
    _check_range(name, video)
