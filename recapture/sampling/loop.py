"""The one EDM Euler sampling loop behind generation and SDEdit refinement.

SVD is an EDM model with v-prediction; the diffusers ``EulerDiscreteScheduler`` (Karras sigmas,
continuous timesteps ``0.25 ln sigma``) does the preconditioning and the Euler update.

A run can start part-way down the noise levels (SDEdit; also the optional anchor start). Strength
``s`` in [0, 1] is a position on SVD's continuous Karras noise curve, so it means the same starting
noise level whatever ``num_inference_steps`` is::

    sigma(u) = (sigma_max^(1/7) + u * (sigma_min^(1/7) - sigma_max^(1/7)))^7,   u in [0, 1]
    start at sigma(1 - s), then max(1, round(s * steps)) Euler steps on the same curve down to sigma_min

With SVD's sigma_min 0.002 and sigma_max 700: strength 1 starts at 700 (pure noise; exactly the full
schedule), 0.5 at 15.6, 0.3 at 1.43, 0.1 at 0.037; strength 0 runs nothing.
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


KARRAS_RHO = 7.0


def steps_for_strength(strength: float, num_inference_steps: int) -> int:
    """Euler steps a partial run of ``strength`` takes: 0 at strength 0, else ``max(1, round(s * steps))``."""
    if strength <= 0:
        return 0
    return max(1, round(strength * num_inference_steps))


def strength_sigmas(sigma_min: float, sigma_max: float, strength: float, num_inference_steps: int) -> torch.Tensor:
    """Noise levels of a partial run: from ``sigma(1 - strength)`` to ``sigma_min`` on the Karras curve, then 0.

    Args:
        sigma_min: lowest noise level of the schedule (SVD: 0.002).
        sigma_max: highest (SVD: 700).
        strength: in (0, 1]; 1 gives exactly the full ``num_inference_steps`` Karras schedule.
        num_inference_steps: steps of the full schedule; the run takes :func:`steps_for_strength`.

    Returns:
        ``(n + 1,)`` float32 sigmas, the last one 0.
    """
    import numpy as np

    n = steps_for_strength(strength, num_inference_steps)
    if n == 0:
        raise ValueError("strength 0 runs no step: return the input instead")
    ramp = np.linspace(1.0 - strength, 1.0, n)
    lo_inv, hi_inv = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
    sigmas = (hi_inv + ramp * (lo_inv - hi_inv)) ** KARRAS_RHO
    return torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))


def partial_scheduler(
    scheduler: EulerDiscreteScheduler, strength: float, num_inference_steps: int, device: torch.device
):
    """A new scheduler whose schedule is :func:`strength_sigmas` (the components' one is left untouched).

    The sigma range is the config's ``sigma_min``/``sigma_max`` (SVD sets both), else that of the
    scheduler's own full schedule.
    """
    fresh = fresh_scheduler(scheduler, num_inference_steps, device)
    lo = scheduler.config.sigma_min or float(fresh.sigmas[-2])
    hi = scheduler.config.sigma_max or float(fresh.sigmas[0])
    fresh.set_timesteps(sigmas=strength_sigmas(lo, hi, strength, num_inference_steps).tolist(), device=device)
    return fresh


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
