"""Short from-scratch runs of small temporal VAEs: which recipe learns colour? (plain torch, CPU).

    python benchmarks/vae_colour_runs.py --steps 400                          # the shipped recipe
    python benchmarks/vae_colour_runs.py --channels 64,64,64 --steps 300      # a wider first level
    python benchmarks/vae_colour_runs.py --loss chroma --cw 2 --steps 400     # + L1 on the chroma of the error
    python benchmarks/vae_colour_runs.py --lr 5e-4 --steps 800
    python benchmarks/vae_colour_runs.py --flat --crop none --steps 150 --every 25            # flat colours only
    python benchmarks/vae_colour_runs.py --flat --crop none --groups 4 --steps 150 --every 25 # diagnostic

Which part of the architecture keeps colour from being learnt (2000 steps each; ``--diffusers``
swaps halves for plain convolution stacks, the other flags are diagnostics of the stock class):

    python benchmarks/vae_colour_runs.py --diffusers none --steps 2000 --every 500                    # plain autoencoder
    python benchmarks/vae_colour_runs.py --diffusers none --plain-norm ends --steps 2000 --every 500  # + the two GroupNorms
    python benchmarks/vae_colour_runs.py --diffusers none --plain-norm ends --channels 64,64,64 --steps 2000 --every 500
    python benchmarks/vae_colour_runs.py --diffusers encoder --plain-norm ends --steps 2000 --every 500
    python benchmarks/vae_colour_runs.py --diffusers encoder --plain-norm ends --no-attention --steps 2000 --every 500
    python benchmarks/vae_colour_runs.py --diffusers decoder --plain-norm ends --steps 2000 --every 500
    python benchmarks/vae_colour_runs.py --diffusers none --plain-norm ends --plain-blocks 32 --steps 2000 --every 500
    python benchmarks/vae_colour_runs.py --diffusers none --plain-norm ends --plain-blocks 8 --steps 2000 --every 500
    python benchmarks/vae_colour_runs.py --zero-init --steps 1000 --every 250                      # blocks start as identity
    python benchmarks/vae_colour_runs.py --mode --steps 1000 --every 250                           # no posterior sampling
    python benchmarks/vae_colour_runs.py --all-groups 1 --steps 400                                # GroupNorm(1) everywhere

Colour-weighted losses, weight decay and MSE on the stock class (shipped width; 1000 steps or stopped earlier):

    python benchmarks/vae_colour_runs.py --boost 6 --steps 1000 --every 250            # data and target chroma x6
    python benchmarks/vae_colour_runs.py --boost 6 --boost-out 1 --steps 1000 --every 250  # input chroma x6 only
    python benchmarks/vae_colour_runs.py --boost 1 --boost-out 6 --steps 1000 --every 250  # target chroma x6 only
    python benchmarks/vae_colour_runs.py --wd 1 --steps 1000 --every 250               # AdamW decay of the weights
    python benchmarks/vae_colour_runs.py --loss mse --steps 1000 --every 250
    python benchmarks/vae_colour_runs.py --error-boost 6 --anneal 1000,2000 --steps 3000 --every 250  # loss weight only
    python benchmarks/vae_colour_runs.py --boost 1 --boost-out 6 --error-boost 1 --steps 1500 --every 250   # output reparam only
    python benchmarks/vae_colour_runs.py --boost 1 --boost-out 6 --anneal 750,1500 --error-boost 6 --steps 2500 --every 250
    python benchmarks/vae_colour_runs.py --axes 6,12 --steps 1000 --every 250     # its own factor per opponent axis

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

from recapture.adaptation.prior import VAESize, chroma_matrix, fix_readout, recolour  # noqa: E402
from recapture.data.procedural.dataset import ProceduralVideoDataset  # noqa: E402
from recapture.metrics.image import psnr  # noqa: E402
from recapture.training.pretrain.quality import chroma_errors, chroma_r2, saturation  # noqa: E402
from recapture.training.pretrain.quality import opponent_chroma as chroma  # noqa: E402


def axis_r2(rec: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """:func:`chroma_r2` of each opponent axis on its own."""
    sse, sst = chroma_errors(rec, ref)
    return [round(1 - float(v), 3) for v in sse / sst]


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


def opponent_boost(k_rg: float, k_by: float) -> torch.Tensor:
    """Like ``chroma_matrix`` but with its own factor for each opponent axis (``r - g`` and ``(r + g) / 2 - b``)."""
    basis = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1.0, -1.0, 0.0], [0.5, 0.5, -1.0]], dtype=torch.float64)
    return (torch.linalg.inv(basis) @ torch.diag(torch.tensor([1.0, k_rg, k_by], dtype=torch.float64)) @ basis).float()


def error_boost(k: float, anneal: str | None, step: int) -> float:
    """``k`` until step ``A`` of ``anneal`` ("A,B"), then linearly down to 1 at step ``B``."""
    if anneal is None:
        return k
    start, end = (int(v) for v in anneal.split(","))
    return k + (1 - k) * min(1.0, max(0.0, (step - start) / max(1, end - start)))


def _attentions(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The diffusers ``Attention`` modules below ``module``."""
    return [m for m in module.modules() if hasattr(m, "to_out") and hasattr(m, "to_q")]


def _zero(layers: list[torch.nn.Module]) -> list[torch.nn.Module]:
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
    return layers


def zero_residual_branches(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Zero the output layer of every residual branch below ``module`` (ResNet ``conv2``, attention
    ``to_out[0]``): each block starts as the identity. Returns the zeroed layers."""
    layers = [m.conv2 for m in module.modules() if hasattr(m, "conv2") and hasattr(m, "norm1")]
    return _zero(layers + [m.to_out[0] for m in _attentions(module)])


class PlainBlock(torch.nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))))))``: the stock ResNet block without its time embedding."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.branch = torch.nn.Sequential(
            torch.nn.GroupNorm(groups, channels), torch.nn.SiLU(), torch.nn.Conv2d(channels, channels, 3, padding=1),
            torch.nn.GroupNorm(groups, channels), torch.nn.SiLU(), torch.nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def _blocks(channels: int, groups: int) -> torch.nn.Module:
    return PlainBlock(channels, groups) if groups else torch.nn.Identity()


def plain_encoder(width: int, latent: int, norm: bool, block_groups: int = 0) -> torch.nn.Sequential:
    """3x3 conv to ``width``, two stride-2 convs to 64, a conv to ``latent``: a 4x encoder.

    ``block_groups`` > 0 adds a :class:`PlainBlock` with that many GroupNorm groups at full and at
    latent resolution.
    """
    act = torch.nn.SiLU
    out_norm = torch.nn.GroupNorm(32, 64) if norm else torch.nn.Identity()
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3, padding=1), _blocks(width, block_groups), act(),
        torch.nn.Conv2d(width, 64, 3, 2, 1), act(), torch.nn.Conv2d(64, 64, 3, 2, 1), _blocks(64, block_groups),
        out_norm, act(), torch.nn.Conv2d(64, latent, 3, padding=1),
    )


def plain_decoder(width: int, latent: int, norm: bool, block_groups: int = 0) -> torch.nn.Sequential:
    """The mirror of :func:`plain_encoder` (nearest upsampling, then a conv)."""
    act, up = torch.nn.SiLU, torch.nn.Upsample
    out_norm = torch.nn.GroupNorm(32, width) if norm else torch.nn.Identity()
    return torch.nn.Sequential(
        torch.nn.Conv2d(latent, 64, 3, padding=1), _blocks(64, block_groups), act(), up(scale_factor=2),
        torch.nn.Conv2d(64, 64, 3, padding=1), act(), up(scale_factor=2), torch.nn.Conv2d(64, width, 3, padding=1),
        _blocks(width, block_groups), out_norm, act(), torch.nn.Conv2d(width, 3, 3, padding=1),
    )


def halves(vae: torch.nn.Module, diffusers: str, width: int, plain_norm: str, block_groups: int = 0):
    """``encode(x, sample) -> (z, kl sum)``, ``decode(z, frames) -> x`` and the parameters to train.

    ``diffusers`` says which halves are ``vae``'s (``both``, ``encoder``, ``decoder``, ``none``); a
    plain encoder is deterministic (KL 0).
    """
    latent = vae.config.latent_channels
    params: list[torch.nn.Parameter] = []
    if diffusers in ("both", "encoder"):
        params += list(vae.encoder.parameters()) + list(vae.quant_conv.parameters())

        def encode(x: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
            posterior = vae.encode(x).latent_dist
            return (posterior.sample() if sample else posterior.mode()), posterior.kl().float().sum()
    else:
        enc = plain_encoder(width, latent, plain_norm == "ends", block_groups)
        params += list(enc.parameters())
        vae.add_module("plain_encoder", enc)  # follows vae.train() / vae.eval()

        def encode(x: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
            return enc(x), torch.zeros(())
    if diffusers in ("both", "decoder"):
        params += list(vae.decoder.parameters())

        def decode(z: torch.Tensor, frames: int) -> torch.Tensor:
            return vae.decode(z, num_frames=frames).sample.float()
    else:
        dec = plain_decoder(width, latent, plain_norm == "ends", block_groups)
        params += list(dec.parameters())
        vae.add_module("plain_decoder", dec)

        def decode(z: torch.Tensor, frames: int) -> torch.Tensor:
            return dec(z)
    return encode, decode, params


def mute_attention(vae: torch.nn.Module) -> None:
    """Zero and freeze the output projection of every attention: each becomes the identity for good."""
    for attention in _attentions(vae):
        _zero([attention.to_out[0]])
        attention.requires_grad_(False)


def swap_norms(module: torch.nn.Module, groups: int) -> None:
    """Replace every GroupNorm below ``module`` by one with ``groups`` groups (-1: by the identity)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.GroupNorm):
            new = torch.nn.Identity() if groups < 0 else torch.nn.GroupNorm(groups, child.num_channels, eps=child.eps)
            setattr(module, name, new)
        else:
            swap_norms(child, groups)


def freeze_readout(vae: torch.nn.Module, which: str, gain: float) -> None:
    """Hold the decoder's last layers fixed: ``both`` is the library's ``fix_readout`` (``conv_out`` at
    orthogonal rows of norm ``gain``, ``time_conv_out`` at the identity); ``time`` fixes only
    ``time_conv_out`` at the identity (a diagnostic)."""
    if which == "both":
        fix_readout(vae, gain=gain)
    elif which == "time":
        layer = vae.decoder.time_conv_out
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[:, :, 1, 0, 0] = torch.eye(3)
        layer.requires_grad_(False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", default="32,64,64", help="block_out_channels (the shipped VAE: 32,64,64)")
    p.add_argument("--latent", type=int, default=4, help="latent_channels (the shipped VAE: 4)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--crop", default="32,48", help="h,w of the training crops, or none")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--loss", choices=("l1", "chroma", "mse"), default="l1")
    p.add_argument("--cw", type=float, default=2.0, help="weight of the chroma term (--loss chroma)")
    p.add_argument("--flat", action="store_true", help="train and evaluate on flat-colour clips")
    p.add_argument("--groups", type=int, default=0, help="diagnostic: groups of the two output GroupNorms")
    p.add_argument("--all-groups", type=int, default=0,
                   help="diagnostic: groups of every GroupNorm (0: as built, -1: no norms at all)")
    p.add_argument("--zero-init", action="store_true",
                   help="zero the last layer of every residual branch (ResNet conv2, attention to_out)")
    p.add_argument("--freeze-branches", action="store_true",
                   help="--zero-init and keep those layers at zero: every residual block stays the identity")
    p.add_argument("--logvar", type=float, default=-6.0, help="the encoder's initial posterior log-variance")
    p.add_argument("--mode", action="store_true", help="decode the posterior mean while training (no sampling)")
    p.add_argument("--diffusers", choices=("both", "encoder", "decoder", "none"), default="both",
                   help="which halves are the diffusers VAE's; the others are plain convolution stacks "
                        "(no residual blocks, attention or temporal layers; 'none': a plain autoencoder)")
    p.add_argument("--plain-norm", choices=("none", "ends"), default="none",
                   help="plain halves: no GroupNorm, or 32-group GroupNorms where the diffusers VAE has its "
                        "conv_norm_out (before the latent head and before the RGB head)")
    p.add_argument("--plain-blocks", type=int, default=0, metavar="GROUPS",
                   help="plain halves: add a residual block (GroupNorm with GROUPS groups, as the stock "
                        "ResNet block) at full and at latent resolution; 0: none")
    p.add_argument("--no-attention", action="store_true",
                   help="switch the mid-block attentions off: to_out zeroed and frozen (the stock class, so the "
                        "weights still load in diffusers)")
    p.add_argument("--boost", type=float, default=1.0,
                   help="train on clips whose chroma is scaled by this factor (input and target); reconstructions "
                        "are scaled back before they are scored (a reparametrisation the export can fold in)")
    p.add_argument("--boost-out", type=float, default=None,
                   help="chroma factor of the target and the reconstruction only (default: --boost)")
    p.add_argument("--axes", default=None, metavar="K_RG,K_BY",
                   help="as --boost-out, with one factor per opponent axis (r-g, (r+g)/2-b); overrides --boost-out")
    p.add_argument("--error-boost", type=float, default=None,
                   help="score the RGB reconstruction error with its chroma scaled by this factor (a colour-"
                        "weighted L1; default: --boost-out, so the loss is the L1 of the boosted output space)")
    p.add_argument("--anneal", default=None, metavar="A,B",
                   help="--error-boost holds until step A and falls linearly to 1 at step B")
    p.add_argument("--wd", type=float, default=0.0,
                   help="AdamW weight decay of the conv and linear weights (not of norms and biases)")
    p.add_argument("--freeze-out", choices=("none", "time", "both"), default="none",
                   help="fix the decoder's last layers (freeze_readout)")
    p.add_argument("--out-gain", type=float, default=1.5, help="row norm of the fixed conv_out")
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
    channels = tuple(int(c) for c in a.channels.split(","))
    vae = VAESize(block_out_channels=channels, latent_channels=a.latent, initial_logvar=a.logvar).build(0)
    if a.groups:
        for part in (vae.encoder, vae.decoder):
            norm = part.conv_norm_out
            part.conv_norm_out = torch.nn.GroupNorm(a.groups, norm.num_channels, eps=norm.eps)
    if a.zero_init or a.freeze_branches:
        zeroed = zero_residual_branches(vae)
        if a.freeze_branches:
            for layer in zeroed:
                layer.requires_grad_(False)
    if a.all_groups:
        swap_norms(vae, a.all_groups)
    if a.no_attention:
        mute_attention(vae)
    freeze_readout(vae, a.freeze_out, a.out_gain)
    encode, decode, params = halves(vae, a.diffusers, channels[0], a.plain_norm, a.plain_blocks)
    params = [q for q in params if q.requires_grad]
    groups = [{"params": [q for q in params if q.ndim >= 2], "weight_decay": a.wd},
              {"params": [q for q in params if q.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.99))
    crop = None if a.crop == "none" else tuple(int(c) for c in a.crop.split(","))
    out_factor = a.boost if a.boost_out is None else a.boost_out
    boost, boost_out, unboost = chroma_matrix(a.boost), chroma_matrix(out_factor), chroma_matrix(1 / out_factor)
    if a.axes:
        k_rg, k_by = (float(v) for v in a.axes.split(","))
        boost_out, unboost = opponent_boost(k_rg, k_by), opponent_boost(1 / k_rg, 1 / k_by)
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
        z, kl = encode(recolour(x, boost), not a.mode)
        err = decode(z, t) - recolour(x, boost_out)
        weight = out_factor if a.error_boost is None else error_boost(a.error_boost, a.anneal, step)
        if weight != out_factor and not a.axes:  # score the RGB error (err brought back from the boosted output space)
            err = recolour(err, chroma_matrix(weight / out_factor))
        loss = (err.square() if a.loss == "mse" else err.abs()).mean() + 1e-6 * kl / z.numel()
        if a.loss == "chroma":
            loss = loss + a.cw * chroma(err).abs().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % a.every == 0 or step == a.steps:
            vae.eval()
            with torch.no_grad():  # posterior mode, as recapture.adaptation.prior.reconstruct
                rec = torch.cat([
                    ((recolour(decode(encode(recolour(c.flatten(0, 1) * 2 - 1, boost), False)[0], c.shape[1]), unboost)
                      + 1) / 2).clamp(0, 1).view(c.shape)
                    for c in held.split(4)
                ])
            vae.train()
            print(json.dumps({"tag": a.tag, "step": step, "s": round(time.time() - start, 1),
                              "psnr": round(float(psnr(rec, held).mean()), 2),
                              "colour": round(saturation(rec) / saturation(held), 3),
                              "chroma_r2": round(chroma_r2(rec, held), 3),
                              "axis_r2": axis_r2(rec, held)}), flush=True)


if __name__ == "__main__":
    main()
