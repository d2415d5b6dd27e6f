"""Where a temporal VAE loses colour: linear chroma probes through the encoder and decoder.

    python benchmarks/vae_colour.py recapture/assets/recapture-tiny/vae
    python benchmarks/vae_colour.py runs/prior-vae/export/vae --clips 16

For held-out procedural clips (split ``eval``, supersampled like the training data) the script
fits, at every stage of the VAE, a per-pixel ridge regression from the features (average-pooled
targets at the feature's resolution) to the opponent chroma of the input frame, ``r - g`` and
``(r + g) / 2 - b``, and prints its R^2 (1: the chroma is linearly readable there; 0: no better
than the mean chroma). A VAE that keeps colour keeps R^2 high down to the latent and back. It
also reconstructs flat frames of random constant colours (+0.05 noise), the easiest colour case.
Plain torch, CPU; a few seconds for the shipped prior.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from vae_colour_runs import chroma  # noqa: E402  (the sibling script: one chroma definition)

from recapture.adaptation.prior import reconstruct  # noqa: E402
from recapture.data.procedural.dataset import ProceduralVideoDataset  # noqa: E402
from recapture.metrics.image import psnr  # noqa: E402


def probe_r2(features: torch.Tensor, target: torch.Tensor) -> list[float]:
    """R^2 of a per-pixel ridge regression ``features (N, C, h, w) -> target (N, 2, H, W)`` pooled to ``h x w``."""
    features = features.detach().float()
    if target.shape[-2:] != features.shape[-2:]:
        target = F.adaptive_avg_pool2d(target, features.shape[-2:])
    x = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    x = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    y = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1]).double()
    w = torch.linalg.solve(x.T @ x + 1e-3 * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    r2 = 1 - ((x @ w - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    return [float(v) for v in r2]


def stage_features(vae: torch.nn.Module, frames: torch.Tensor, num_frames: int) -> dict[str, torch.Tensor]:
    """Features at every stage of ``vae`` for frames ``(N, 3, H, W)`` in [0, 1] (forward hooks)."""
    enc, dec = vae.encoder, vae.decoder
    found: dict[str, torch.Tensor] = {}
    hooks = [enc.conv_in.register_forward_hook(lambda m, i, o: found.__setitem__("encoder conv_in", o))]
    for k, block in enumerate(enc.down_blocks):
        hooks.append(block.register_forward_hook(lambda m, i, o, k=k: found.__setitem__(f"encoder level {k}", o)))
    hooks.append(enc.conv_norm_out.register_forward_hook(
        lambda m, i, o: found.__setitem__("encoder conv_norm_out", o)))
    hooks.append(dec.conv_norm_out.register_forward_hook(
        lambda m, i, o: found.__setitem__("decoder before conv_norm_out", i[0])))
    hooks.append(dec.conv_out.register_forward_hook(lambda m, i, o: found.__setitem__("decoder conv_out", o)))
    try:
        with torch.no_grad():
            z = vae.encode(frames * 2 - 1).latent_dist.mode()
            out = vae.decode(z, num_frames=num_frames).sample
    finally:
        for h in hooks:
            h.remove()
    stages = {k: found[k] for k in list(found) if k.startswith("encoder")}
    stages["latent (posterior mode)"] = z
    stages["decoder before conv_norm_out"] = found["decoder before conv_norm_out"]
    stages["decoder conv_out"] = found["decoder conv_out"]
    stages["decoded"] = out
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vae", help="a diffusers AutoencoderKLTemporalDecoder folder (config.json + safetensors)")
    parser.add_argument("--clips", type=int, default=8, help="held-out clips (8 frames of 64x96 each)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKLTemporalDecoder

    vae = AutoencoderKLTemporalDecoder.from_pretrained(args.vae).eval()
    start = time.perf_counter()
    data = ProceduralVideoDataset(split="eval", num_clips=args.clips, supersample=2, with_geometry=False,
                                  with_target=False)
    clips = torch.stack([data[i]["video"] for i in range(args.clips)])  # (N, T, 3, H, W)
    n, t = clips.shape[:2]
    frames = clips.reshape(n * t, *clips.shape[2:])
    target = chroma(frames * 2 - 1)
    print(f"`python benchmarks/vae_colour.py {args.vae} --clips {args.clips}` - {platform.machine()}, "
          f"torch {torch.__version__}, threads {args.threads}; {n} held-out clips of {t} frames "
          f"{frames.shape[-2]}x{frames.shape[-1]}, block_out_channels {tuple(vae.config.block_out_channels)}\n")
    print("| stage | features | chroma R^2 (r-g) | chroma R^2 ((r+g)/2-b) |")
    print("| --- | --- | ---: | ---: |")
    for name, feats in stage_features(vae, frames, t).items():
        r2 = probe_r2(feats, target)
        print(f"| {name} | {tuple(feats.shape[1:])} | {r2[0]:.3f} | {r2[1]:.3f} |")
    g = torch.Generator().manual_seed(1)
    colours = torch.rand(4, 1, 3, 1, 1, generator=g)
    flat = (colours + 0.05 * torch.randn(4, t, *clips.shape[2:], generator=g)).clamp(0, 1)
    with torch.no_grad():
        rec = reconstruct(vae, flat)
        rec_clips = reconstruct(vae, clips)
    print(f"\nheld-out clips: reconstruction PSNR {float(psnr(rec_clips, clips).mean()):.2f} dB")
    print(f"flat frames (4 random colours + 0.05 noise): reconstruction PSNR {float(psnr(rec, flat).mean()):.2f} dB; "
          f"mean colour in {[[round(float(c), 2) for c in col.flatten()] for col in colours]}, "
          f"out {[[round(float(c), 2) for c in r.mean((0, 2, 3))] for r in rec]}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
