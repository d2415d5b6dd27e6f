"""Quality figures of a trained prior: VAE reconstruction PSNR, samples from held-out first frames, a frame strip.

Plain torch (no Lightning): the UNet stage's export and ``benchmarks/prior_quality.py`` use it.
Video ``(N, T, 3, H, W)`` float in [0, 1].

Sample figures (one sample per clip from its first frame, the stock SVD sampler):

* ``sample_psnr_db``: generated frames 1.. vs the held-out ground-truth clip's (a moving camera, so
  a perfect prior does not reach the reconstruction PSNR; pure noise gives ~5-8 dB);
* ``static_psnr_db``: baseline, the first frame repeated, on the same frames;
* ``sample_frame0_psnr_db``: generated frame 0 vs the prompt (SVD reproduces its prompt first);
* ``sample_motion`` / ``true_motion``: mean absolute difference of consecutive frames (noise
  flickers: its value is far above the true clips').
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recapture.adaptation.prior import reconstruct
from recapture.metrics.image import psnr
from recapture.utils import RecaptureError, check_video


def _check_clips(clips: torch.Tensor) -> None:
    check_video(clips, "clips", batched=True, fix="pass a batch of clips, float in [0, 1]")


@torch.no_grad()
def reconstruction_psnr(vae: torch.nn.Module, clips: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """Per-clip PSNR (mean over frames, dB) of the VAE's reconstruction (posterior mode) of ``clips``: ``(N,)``."""
    _check_clips(clips)
    device = next(vae.parameters()).device
    out = [psnr(reconstruct(vae, c.to(device)).cpu(), c).mean(1) for c in clips.split(batch)]
    return torch.cat(out).float()


def saturation(video: torch.Tensor) -> float:
    """Mean colour saturation of ``video`` (``(..., 3, H, W)`` in [0, 1]): max - min over the channels (0: grey)."""
    return float((video.amax(-3) - video.amin(-3)).mean())


def colour_kept(rec: torch.Tensor, ref: torch.Tensor) -> float:
    """Saturation of ``rec`` over that of ``ref`` (both in [0, 1]): 1 keeps all the colour, 0 is grey."""
    return saturation(rec) / max(saturation(ref), 1e-8)


@torch.no_grad()
def opponent_chroma(video: torch.Tensor) -> torch.Tensor:
    """Opponent chroma of ``(..., 3, H, W)``: ``r - g`` and ``(r + g) / 2 - b`` along the channel axis."""
    r, g, b = video.unbind(-3)
    return torch.stack([r - g, (r + g) / 2 - b], -3)


def chroma_errors(rec: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per opponent axis: the squared error of ``rec``'s chroma against ``ref``'s and ``ref``'s total
    sum of squares about its mean chroma (``(..., 3, H, W)`` videos of one shape)."""
    cr, ce = opponent_chroma(rec), opponent_chroma(ref)
    axes = tuple(i for i in range(ce.ndim) if i != ce.ndim - 3)
    return ((cr - ce) ** 2).sum(axes), ((ce - ce.mean(axes, keepdim=True)) ** 2).sum(axes)


def chroma_r2(rec: torch.Tensor, ref: torch.Tensor) -> float:
    """``1 - SSE / SST`` of the opponent chroma of ``rec`` against ``ref``: 1 exact colours, 0 no better
    than ``ref``'s mean colour everywhere (a grey reconstruction scores about 0 or below)."""
    sse, sst = chroma_errors(rec, ref)
    return 1 - float(sse.sum() / sst.sum())


def reconstruction_colour(vae: torch.nn.Module, clips: torch.Tensor, batch: int = 4) -> float:
    """How much colour the VAE keeps: saturation of its reconstructions over that of ``clips`` (1: all; 0: grey)."""
    _check_clips(clips)
    device = next(vae.parameters()).device
    rec = torch.cat([reconstruct(vae, c.to(device)).cpu() for c in clips.split(batch)])
    return colour_kept(rec, clips)


def _motion(video: torch.Tensor) -> float:
    return float((video[:, 1:] - video[:, :-1]).abs().mean())


@torch.no_grad()
def sample_quality(
    components: Any,
    clips: torch.Tensor,
    num_inference_steps: int = 12,
    seed: int = 0,
    **sampling: Any,
) -> dict[str, Any]:
    """Sample one clip per held-out first frame and score it (see the module docstring).

    Args:
        components: ``SVDComponents`` of the prior.
        clips: ``(N, T, 3, H, W)`` held-out clips in [0, 1].
        num_inference_steps: Euler steps per sample.
        seed: seed of sample ``i`` is ``seed + i``.
        **sampling: further ``SamplingConfig`` fields (guidance scales, fps, motion bucket, ...).

    Returns:
        the figures (floats) and ``frames``: ``(N, T, 3, H, W)`` the samples.
    """
    from recapture.sampling import SamplingConfig, generate

    _check_clips(clips)
    n, t = clips.shape[:2]
    samples = []
    for i in range(n):
        config = SamplingConfig(num_inference_steps=num_inference_steps, seed=seed + i, **sampling)
        samples.append(generate(components, clips[i, 0], t, config, adapters=None, progress=False).frames)
    frames = torch.stack(samples)
    later = slice(1, None) if t > 1 else slice(None)  # frame 0 is the prompt: the static baseline is exact there
    static = clips[:, :1].expand_as(clips)
    return {
        "sample_psnr_db": float(psnr(frames[:, later], clips[:, later]).mean()),
        "static_psnr_db": float(psnr(static[:, later], clips[:, later]).mean()),
        "sample_frame0_psnr_db": float(psnr(frames[:, 0], clips[:, 0]).mean()),
        "sample_motion": _motion(frames),
        "true_motion": _motion(clips),
        "sample_clips": n,
        "sample_steps": num_inference_steps,
        "frames": frames,
    }


def write_strip(path: str | Path, clips: torch.Tensor, samples: torch.Tensor, num_shown: int = 4) -> Path:
    """Write a PNG: one row per clip, its held-out first frame then ``num_shown`` sampled frames.

    Args:
        path: output ``.png``.
        clips: ``(N, T, 3, H, W)`` the held-out clips (their first frames are the prompts).
        samples: ``(N, T, 3, H, W)`` the sampled clips.
        num_shown: sampled frames per row (evenly spaced, first and last included).
    """
    from recapture.io import make_grid, save_image

    _check_clips(clips)
    if samples.shape != clips.shape:
        raise RecaptureError(f"samples {tuple(samples.shape)} must match clips {tuple(clips.shape)}")
    t = clips.shape[1]
    shown = torch.linspace(0, t - 1, min(num_shown, t)).round().long().tolist()
    tiles, captions = [], []
    for clip, sample in zip(clips, samples, strict=True):
        tiles.append(clip[0])
        captions.append("held-out frame 0")
        for k in shown:
            tiles.append(sample[k])
            captions.append(f"sample t={k}")
    grid = make_grid(tiles, captions, ncols=1 + len(shown), pad=2)
    return save_image(path, grid[0])
