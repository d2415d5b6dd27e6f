"""Does a plain autoencoder's latent space, used as a teacher, make the stock temporal VAE learn colour? (CPU)

    python benchmarks/vae_colour_teacher.py --teacher 1500 --steps 1000 --joint 500 --every 250

1. A plain convolutional autoencoder (``recapture.training.pretrain.teacher.PlainAutoencoder``, the
   same stacks as ``vae_colour_runs.plain_encoder``/``plain_decoder``, no GroupNorm: 26.6 dB and
   chroma R^2 0.82 after 2000 steps in ``vae_colour_runs.py``) is trained
   for ``--teacher`` steps, then frozen.
2. The stock ``AutoencoderKLTemporalDecoder`` learns from it: its decoder reconstructs the clip
   from the teacher's latents (L1), its encoder regresses the teacher's latents (squared error on
   the posterior mean), each half on its own (no gradient through the other).
3. After ``--joint`` steps of that, the stock VAE trains end to end (L1 + 1e-6 KL, as
   ``recapture pretrain``'s VAE stage) so its two halves agree.

The same data, crops, optimiser and held-out scores as ``vae_colour_runs.py``; each line scores the
stock VAE alone (encoder and decoder both stock) and, while distilling, the stock decoder on the
teacher's latents (``dec_psnr``, ``dec_chroma_r2``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from vae_colour_runs import axis_r2, chroma_r2, freeze_readout, load_pool  # noqa: E402

from recapture.adaptation.prior import VAESize  # noqa: E402
from recapture.metrics.image import psnr  # noqa: E402
from recapture.training.pretrain.quality import saturation  # noqa: E402
from recapture.training.pretrain.teacher import PlainAutoencoder, distillation_loss, train_teacher  # noqa: E402


def crops(train: torch.Tensor, crop: tuple[int, int] | None) -> torch.Tensor:
    """Two random clips, cropped to the same random window (multiples of 4): ``(2 * T, 3, h, w)`` in [-1, 1]."""
    v = train[torch.randint(0, len(train), (2,))]
    if crop:
        y = int(torch.randint(0, (v.shape[-2] - crop[0]) // 4 + 1, ())) * 4
        x = int(torch.randint(0, (v.shape[-1] - crop[1]) // 4 + 1, ())) * 4
        v = v[..., y : y + crop[0], x : x + crop[1]]
    return v.flatten(0, 1) * 2 - 1


def scores(rec: torch.Tensor, held: torch.Tensor, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}psnr": round(float(psnr(rec, held).mean()), 2),
            f"{prefix}colour": round(saturation(rec) / saturation(held), 3),
            f"{prefix}chroma_r2": round(chroma_r2(rec, held), 3),
            f"{prefix}axis_r2": axis_r2(rec, held)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", default="32,64,64")
    p.add_argument("--teacher", type=int, default=1500, help="steps of the plain autoencoder")
    p.add_argument("--steps", type=int, default=1000, help="steps of the stock VAE (distillation + joint)")
    p.add_argument("--joint", type=int, default=500, help="distillation steps before end-to-end training")
    p.add_argument("--latent-weight", type=float, default=1.0, help="weight of the encoder's latent regression (0: the decoder alone learns while distilling)")
    p.add_argument("--crop", default="32,48")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--pool", type=Path, default=Path("/tmp/vae_colour_pool.pt"))
    p.add_argument("--save", type=Path, default=None, help="save the stock VAE here (save_pretrained)")
    p.add_argument("--freeze-out", choices=("none", "time", "both"), default="none",
                   help="fix the decoder's last layers: 'time' holds time_conv_out at the identity, 'both' also "
                        "holds conv_out at a random readout with orthogonal rows (a balanced colour readout)")
    p.add_argument("--out-gain", type=float, default=1.5, help="row norm of the fixed conv_out ('both')")
    p.add_argument("--no-temporal", action="store_true",
                   help="diagnostic: the decoder's temporal ResNet branches zeroed and frozen (identity)")
    p.add_argument("--out-groups", type=int, default=0,
                   help="diagnostic: groups of the decoder's conv_norm_out (0: as built, 32)")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pool = load_pool(a.pool)
    train, held = pool["train"], pool["eval"]
    crop = None if a.crop == "none" else tuple(int(c) for c in a.crop.split(","))
    channels = tuple(int(c) for c in a.channels.split(","))
    vae = VAESize(block_out_channels=channels).build(0)
    teacher = PlainAutoencoder(len(channels), vae.config.latent_channels, channels[0], 64)
    start = time.time()
    cache = a.pool.with_name(f"vae_colour_teacher_plain_{a.channels.replace(',', '-')}_{a.teacher}.pt")
    if cache.is_file():  # the same seed and steps give the same teacher: train it once
        teacher.load_state_dict(torch.load(cache))
    else:
        train_teacher(teacher, iter(lambda: crops(train, crop), None), a.teacher, lr=a.lr)
        torch.save(teacher.state_dict(), cache)
    teacher.requires_grad_(False).eval()
    enc = teacher.encoder
    with torch.no_grad():
        rec = torch.cat([((teacher(c.flatten(0, 1) * 2 - 1) + 1) / 2).clamp(0, 1).view(c.shape) for c in held.split(4)])
    print(json.dumps({"tag": a.tag, "teacher_steps": a.teacher, "s": round(time.time() - start, 1),
                      **scores(rec, held, "teacher_")}), flush=True)

    freeze_readout(vae, a.freeze_out, a.out_gain)
    if a.no_temporal:
        for m in vae.decoder.modules():
            if type(m).__name__ == "TemporalResnetBlock":
                with torch.no_grad():
                    m.conv2.weight.zero_()
                    m.conv2.bias.zero_()
                m.requires_grad_(False)
    if a.out_groups:
        norm = vae.decoder.conv_norm_out
        vae.decoder.conv_norm_out = torch.nn.GroupNorm(a.out_groups, norm.num_channels, eps=norm.eps)
    params = [q for q in vae.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.99), weight_decay=0.0)
    for step in range(1, a.steps + 1):
        for group in opt.param_groups:  # 50-step warm-up
            group["lr"] = a.lr * min(1.0, step / 50)
        x = crops(train, crop)
        t = 8
        if step <= a.joint:
            loss = distillation_loss(vae, teacher, x, t, a.latent_weight).loss
        else:
            posterior = vae.encode(x).latent_dist
            z = posterior.sample()
            loss = (vae.decode(z, num_frames=t).sample - x).abs().mean() + 1e-6 * posterior.kl().sum() / z.numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % a.every == 0 or step == a.steps:
            vae.eval()
            with torch.no_grad():
                own, via = [], []
                for c in held.split(4):
                    x = c.flatten(0, 1) * 2 - 1
                    own.append(((vae.decode(vae.encode(x).latent_dist.mode(), num_frames=8).sample + 1) / 2)
                               .clamp(0, 1).view(c.shape))
                    via.append(((vae.decode(enc(x), num_frames=8).sample + 1) / 2).clamp(0, 1).view(c.shape))
            vae.train()
            print(json.dumps({"tag": a.tag, "step": step, "s": round(time.time() - start, 1),
                              **scores(torch.cat(own), held), **scores(torch.cat(via), held, "dec_")}), flush=True)
    if a.save:
        vae.save_pretrained(a.save)


if __name__ == "__main__":
    main()
