"""Sampling stage: generation with both LoRAs and SDEdit refinement with the spatial LoRA (paper 3.3, 4.4).

Plain torch on top of ``recapture.adaptation``'s components; one EDM Euler loop shared by both.
Memory options and their trade-offs are documented in ``recapture.sampling.session``.
"""

from recapture.sampling.conditioning import Conditioning, build_conditioning, guidance_ramp
from recapture.sampling.config import DenoiseConfig, RefineConfig, SampleOutput, SamplingConfig
from recapture.sampling.cpu_forwards import (
    blocked_feed_forwards,
    lean_attention,
    lean_resnets,
    onednn_temporal_convolutions,
)
from recapture.sampling.decode import decode_latents
from recapture.sampling.loop import (
    denoise,
    fresh_scheduler,
    noise_to_step,
    partial_scheduler,
    steps_for_strength,
    strength_sigmas,
)
from recapture.sampling.sampler import generate, sdedit_refine
from recapture.sampling.session import merged_lora, sampling_session, use_adapters

__all__ = [
    "Conditioning",
    "DenoiseConfig",
    "RefineConfig",
    "SampleOutput",
    "SamplingConfig",
    "blocked_feed_forwards",
    "build_conditioning",
    "decode_latents",
    "denoise",
    "fresh_scheduler",
    "generate",
    "guidance_ramp",
    "lean_attention",
    "lean_resnets",
    "merged_lora",
    "noise_to_step",
    "onednn_temporal_convolutions",
    "sampling_session",
    "sdedit_refine",
    "partial_scheduler",
    "steps_for_strength",
    "strength_sigmas",
    "use_adapters",
]
