"""Settings for generation and SDEdit refinement, and the result type both return."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recapture.adaptation.objective import MicroConditioning
from recapture.utils import RecaptureError


@dataclass
class DenoiseConfig(MicroConditioning):
    """Settings shared by generation and refinement: schedule, guidance, SVD micro-conditioning, memory.

    The micro-conditioning (``fps``, ``motion_bucket_id``, ``noise_aug_strength``) is the same
    :class:`~recapture.adaptation.objective.MicroConditioning` the training objective
    (``EDMConfig``) uses, with the same flat keys (``model.sampling.fps``, ...); ``ReCaptureModule``
    gives a field left at its default the objective's value.

    Args:
        num_inference_steps: Euler steps of the full schedule (a strength below 1 runs fewer of them).
        min_guidance_scale: classifier-free guidance scale of the first frame.
        max_guidance_scale: guidance scale of the last frame (linear ramp in between, as SVD does).
            Guidance is off (one UNet pass per step instead of two) when both are <= 1.
        seed: seed of the generator (on the execution device) that draws the prompt noise, then the
            latent noise, in the pipeline's order; the same seed gives the same video on the same device.
        decode_chunk_size: frames decoded at once by the temporal VAE decoder (lower: less memory,
            slightly less temporal smoothness across chunk borders).
        cpu_offload: keep only the running model on the GPU (accelerate hooks); ignored on CPU.
        forward_chunking: run the UNet feed-forward layers one frame at a time (less activation
            memory, a little slower).
        merge_lora: fold the active LoRAs into float32 base weights for the call (one matmul per
            adapted layer instead of three; restored bit for bit afterwards). Same video to float32
            rounding; half-precision weights are never merged. False runs the LoRA branches as trained.
        reuse_host_memory: on a CPU (Linux, glibc), take large tensors from the process heap for the
            call instead of fresh memory mappings the kernel must fault in and zero every time
            (:mod:`recapture.host_memory`): the same video, faster, with a higher peak RSS during the
            call; freed memory goes back to the system when it ends.
    """

    num_inference_steps: int = 25
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 3.0
    seed: int = 0
    decode_chunk_size: int = 8
    cpu_offload: bool = False
    forward_chunking: bool = False
    merge_lora: bool = True
    reuse_host_memory: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``RecaptureError`` naming the first invalid setting."""
        if self.num_inference_steps < 1:
            raise RecaptureError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.decode_chunk_size < 1:
            raise RecaptureError(f"decode_chunk_size must be >= 1, got {self.decode_chunk_size}")
        MicroConditioning.validate(self)
        if self.min_guidance_scale < 0 or self.max_guidance_scale < 0:
            raise RecaptureError(
                f"guidance scales must be >= 0, got min={self.min_guidance_scale}, max={self.max_guidance_scale}"
            )

    @property
    def uses_guidance(self) -> bool:
        """True when classifier-free guidance is on (two UNet passes per step)."""
        return max(self.min_guidance_scale, self.max_guidance_scale) > 1.0


def check_strength(name: str, strength: float | None) -> None:
    """Raise ``RecaptureError`` unless ``strength`` is None or in [0, 1]."""
    if strength is None:
        return
    if not 0.0 <= strength <= 1.0:
        raise RecaptureError(
            f"{name} must be in [0, 1] (0 keeps the input, 1 starts from pure noise), got {strength}"
        )


@dataclass
class SamplingConfig(DenoiseConfig):
    """Generation with both LoRAs (paper 4.4): image prompt = first anchor frame.

    Args:
        anchor_strength: beyond the paper, off by default (None). When set, sampling starts from the
            anchor video's latents noised to this strength (same meaning as ``RefineConfig.strength``)
            instead of from pure noise; needs the ``anchor`` argument of ``generate``.
    """

    anchor_strength: float | None = None

    def validate(self) -> None:
        super().validate()
        check_strength("anchor_strength", self.anchor_strength)


@dataclass
class RefineConfig(DenoiseConfig):
    """SDEdit refinement (paper 3.3): noise the generated video to ``strength`` and denoise it.

    Args:
        strength: 0 returns the input unchanged (no encode/decode); s starts from the video's latents
            noised to ``sigma(1 - s)`` of SVD's continuous Karras noise curve (0.3: sigma 1.43, 0.5:
            15.6, 1: pure noise), the same whatever ``num_inference_steps``, and runs
            ``max(1, round(s * num_inference_steps))`` steps down to sigma_min.
        adapters: LoRA adapters active during refinement; the temporal LoRA is left out by default,
            an empty list refines with the base model.
    """

    strength: float = 0.3
    adapters: list[str] = field(default_factory=lambda: ["spatial"])

    def validate(self) -> None:
        super().validate()
        check_strength("strength", self.strength)


@dataclass
class SampleOutput:
    """Result of ``generate`` / ``sdedit_refine`` (tensors on the CPU, float32).

    Args:
        frames: (T, 3, H, W) video in [0, 1].
        latents: (T, 4, h, w) final latents, scaled by the VAE scaling factor; None when refinement was
            skipped (strength 0 returns the input frames without encoding them).
        timings: seconds per phase (``encode_s``, ``denoise_s``, ``decode_s``, ``total_s``) plus
            ``steps`` (denoising steps run) and ``s_per_step``.
        peak_memory_bytes: peak CUDA memory allocated during the call; None on CPU.
    """

    frames: torch.Tensor
    latents: torch.Tensor | None
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int | None = None
