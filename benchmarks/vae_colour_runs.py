"""Short from-scratch runs of small temporal VAEs: which recipe learns colour? (plain torch, CPU).

    python benchmarks/vae_colour_runs.py --steps 400                          # the shipped recipe
    python benchmarks/vae_colour_runs.py --channels 64,64,64 --steps 300      # a wider first level
    python benchmarks/vae_colour_runs.py --loss chroma --cw 2 --steps 400     # + L1 on the chroma of the error
    python benchmarks/vae_colour_runs.py --lr 5e-4 --steps 800
    python benchmarks/vae_colour_runs.py --flat --crop none --steps 150 --every 25            # flat colours only
    python benchmarks/vae_colour_runs.py --flat --crop none --groups 4 --steps 150 --every 25 # diagnostic

A pool of 64 training clips and 8 held-out clips (procedural, 8 frames of 64x96, supersampled) is
rendered once and cached (``--pool``). Each step: 2 random clips, a random crop (the same window
for every frame; ``--crop none``: whole frames), L1 + 1e-6 KL (as ``recapture pretrain``'s VAE
stage), AdamW (betas 0.9/0.99, no weight decay, 50-step linear warm-up), gradient clipping at 1.
Every ``--every`` steps one JSON line: held-out PSNR, the saturation ratio (reconstruction /
input; 1 keeps all, 0 is grey) and the chroma R^2 of the reconstructions (opponent channels
``r - g``, ``(r + g) / 2 - b``; 1: exact colour, 0: no better than the mean colour, < 0: worse).
``--groups`` replaces the two output GroupNorms (encoder and decoder ``conv_norm_out``) by ones
with fewer groups: a diagnostic only, not expressible in a diffusers config.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from recapture.adaptation.prior import VAESize, reconstruct  # noqa: E402
from recapture.data.procedural.dataset import ProceduralVideoDataset  # noqa: E402
from recapture.metrics.image import psnr  # noqa: E402
from recapture.training.pretrain.quality import saturation  # noqa: E402


def chroma(video: torch.Tensor) -> torch.Tensor:
    """Opponent chroma of ``(..., 3, H, W)``: ``r - g`` and ``(r + g) / 2 - b`` along the channel axis."""
    r, g, b = video.unbind(-3)
    return torch.stack([r - g, (r + g) / 2 - b], -3)


def chroma_r2(rec: torch.Tensor, ref: torch.Tensor) -> float:
    """``1 - SSE / SST`` of the chroma of ``rec`` against ``ref`` ``(N, T, 3, H, W)``."""
    cr, ce = chroma(rec), chroma(ref)
    return 1 - float(((cr - ce) ** 2).sum() / ((ce - ce.mean((0, 1, 3, 4), keepdim=True)) ** 2).sum())


def load_pool(path: Path) -> dict[str, torch.Tensor]:
    """64 train and 8 eval clips ``(N, 8, 3, 64, 96)``, rendered once (about 10 s) and cached at ``path``."""
    if path.is_file():
        return torch.load(path)
    train = ProceduralVideoDataset(split="train", num_clips=64, supersample=2, with_geometry=False, with_target=False)
    held = ProceduralVideoDataset(split="eval", num_clips=8, supersample=2, with_geometry=False, with_target=False)
    pool = {"train": torch.stack([train[i]["video"] for i in range(64)]),
            "eval": torch.stack([held[i]["video"] for i in range(8)])}
    torch.save(pool, path)
    return pool


def flat_clips(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` clips of one random constant colour each, plus 0.05 noise: ``(n, 8, 3, 64, 96)``."""
    colour = torch.rand(n, 1, 3, 1, 1, generator=generator)
    return (colour + 0.05 * torch.randn(n, 8, 3, 64, 96, generator=generator)).clamp(0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", default="32,64,64", help="block_out_channels (the shipped VAE: 32,64,64)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--crop", default="32,48", help="h,w of the training crops, or none")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--loss", choices=("l1", "chroma"), default="l1")
    p.add_argument("--cw", type=float, default=2.0, help="weight of the chroma term (--loss chroma)")
    p.add_argument("--flat", action="store_true", help="train and evaluate on flat-colour clips")
    p.add_argument("--groups", type=int, default=0, help="diagnostic: groups of the two output GroupNorms")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--pool", type=Path, default=Path("/tmp/vae_colour_pool.pt"))
    p.add_argument("--tag", default="")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pool = load_pool(a.pool)
    train, held = pool["train"], pool["eval"]
    if a.flat:
        g = torch.Generator().manual_seed(1)
        train, held = flat_clips(64, g), flat_clips(8, g)
    vae = VAESize(block_out_channels=tuple(int(c) for c in a.channels.split(","))).build(0)
    if a.groups:
        for part in (vae.encoder, vae.decoder):
            norm = part.conv_norm_out
            part.conv_norm_out = torch.nn.GroupNorm(a.groups, norm.num_channels, eps=norm.eps)
    opt = torch.optim.AdamW(vae.parameters(), lr=a.lr, betas=(0.9, 0.99), weight_decay=0.0)
    crop = None if a.crop == "none" else tuple(int(c) for c in a.crop.split(","))
    start = time.time()
    for step in range(1, a.steps + 1):
        v = train[torch.randint(0, len(train), (2,))]
        if crop:
            y = int(torch.randint(0, (64 - crop[0]) // 4 + 1, ())) * 4
            x = int(torch.randint(0, (96 - crop[1]) // 4 + 1, ())) * 4
            v = v[..., y : y + crop[0], x : x + crop[1]]
        for group in opt.param_groups:
            group["lr"] = a.lr * min(1.0, step / 50)
        b, t = v.shape[:2]
        x = v.reshape(b * t, *v.shape[2:]) * 2 - 1
        posterior = vae.encode(x).latent_dist
        z = posterior.sample()
        err = vae.decode(z, num_frames=t).sample.float() - x
        loss = err.abs().mean() + 1e-6 * posterior.kl().float().sum() / z.numel()
        if a.loss == "chroma":
            loss = loss + a.cw * chroma(err).abs().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % a.every == 0 or step == a.steps:
            vae.eval()
            with torch.no_grad():
                rec = torch.cat([reconstruct(vae, held[i : i + 4]) for i in range(0, len(held), 4)])
            vae.train()
            print(json.dumps({"tag": a.tag, "step": step, "s": round(time.time() - start, 1),
                              "psnr": round(float(psnr(rec, held).mean()), 2),
                              "colour": round(saturation(rec) / saturation(held), 3),
                              "chroma_r2": round(chroma_r2(rec, held), 3)}), flush=True)


if __name__ == "__main__":
    main()
