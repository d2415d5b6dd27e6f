"""The one EDM Euler sampling loop behind generation and SDEdit refinement.

SVD is an EDM model with v-prediction; the diffusers ``EulerDiscreteScheduler`` (Karras sigmas,
continuous timesteps ``0.25 ln sigma``) does the preconditioning and the Euler update. A run can
start part-way down the schedule: strength ``s`` runs the last ``int(s * steps)`` steps, starting
from clean latents noised to that step's sigma (SDEdit; also the optional anchor start).
"""

from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler
from tqdm.auto import tqdm

from recapture.sampling.conditioning import Conditioning


def fresh_scheduler(scheduler: EulerDiscreteScheduler, num_inference_steps: int, device: torch.device):
    """A new scheduler with the same config and its timesteps set (the components' one is left untouched).

    Schedulers keep a step counter, so sharing one between calls (or with a pipeline) is unsafe.
    """
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(num_inference_steps, device=device)
    return fresh


def start_index(strength: float, num_inference_steps: int) -> int:
    """Index of the first step to run for a strength in [0, 1].

    Strength 1 runs the whole schedule (index 0); strength s runs the last ``int(s * steps)`` steps,
    so a strength too small for one step returns ``num_inference_steps`` (nothing to run).
    """
    return num_inference_steps - int(strength * num_inference_steps)


def noise_to_step(
    clean: torch.Tensor, noise: torch.Tensor, scheduler: EulerDiscreteScheduler, index: int
) -> torch.Tensor:
    """Noise clean latents to the sigma of step ``index``: ``clean + sigma * noise`` (EDM).

    Args:
        clean: (B, T, 4, h, w) scaled latents.
        noise: standard normal noise, same shape.
        scheduler: scheduler with timesteps set.
        index: step index in ``[0, num_inference_steps]``; the last index has sigma 0.

    Returns:
        Noisy latents, same shape and dtype as ``clean``.
    """
    sigma = scheduler.sigmas[index].to(device=clean.device, dtype=torch.float32)
    return (clean.float() + sigma * noise.float()).to(clean.dtype)


@torch.no_grad()
def denoise(
    unet: torch.nn.Module,
    scheduler: EulerDiscreteScheduler,
    latents: torch.Tensor,
    cond: Conditioning,
    first_step: int = 0,
    progress: bool = True,
    desc: str = "denoise",
) -> torch.Tensor:
    """Run the Euler steps ``first_step..end`` of ``scheduler`` on ``latents``.

    Args:
        unet: ``UNetSpatioTemporalConditionModel`` (its active adapters are used as they are).
        scheduler: ``EulerDiscreteScheduler`` with timesteps set (it is advanced in place).
        latents: (1, T, 4, h, w) noisy latents at the sigma of ``first_step`` (unscaled by c_in).
        cond: conditioning from ``build_conditioning`` (batch 2 with guidance).
        first_step: index of the first step to run.
        progress: show a tqdm bar over the steps.
        desc: label of the bar.

    Returns:
        (1, T, 4, h, w) denoised latents.
    """
    timesteps = scheduler.timesteps[first_step:]
    scheduler.set_begin_index(first_step)
    passes = 2 if cond.guidance is not None else 1
    for t in tqdm(timesteps, desc=desc, disable=not progress, unit="step", leave=False):
        model_in = torch.cat([latents] * passes) if passes == 2 else latents
        model_in = scheduler.scale_model_input(model_in, t)
        model_in = torch.cat([model_in, cond.cond_latents], dim=2)
        pred = unet(
            model_in,
            t,
            encoder_hidden_states=cond.image_embeds,
            added_time_ids=cond.time_ids,
            return_dict=False,
        )[0]
        if cond.guidance is not None:
            uncond, conditional = pred.chunk(2)
            pred = uncond + cond.guidance * (conditional - uncond)
        latents = scheduler.step(pred, t, latents).prev_sample
    return latents
