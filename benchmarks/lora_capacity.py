"""How much of one video a small prior's adapters can learn: LoRA targets and rank against full fine-tuning.

    python benchmarks/lora_capacity.py                       # recapture-tiny, 2 held-out clips, 150 steps
    python benchmarks/lora_capacity.py --clips 1 --steps 60 --every 30 --variants lora8 lora32-conv

Fits the prior to ONE held-out procedural clip (``split="eval"``, never seen in training; the whole
clip, no mask) with the SVD objective (``recapture.adaptation.edm_loss``, the set's own noise
levels), both LoRA adapters trained together (no bypass: this measures capacity, not the method),
and every ``--every`` steps samples the clip back from its first frame (``recapture.sampling.generate``,
guidance 1) and scores it against the clip (PSNR over all frames). Variants: ``base`` (no training),
``loraR`` (the paper's targets: spatial self-attention, every linear layer of the temporal blocks,
rank R), ``loraR-conv`` (also the ResNet convolutions: ``LoRAConfig.convolutions``) and ``full``
(every UNet weight, lr / 2). A variant that cannot reproduce the clip it was fitted to cannot fit an
anchor video either: this is the ceiling of the method's fine-tuning on that prior.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from dataclasses import dataclass

import torch

from recapture.adaptation import (
    ComponentsConfig,
    EDMConfig,
    LoRAConfig,
    adapter_parameters,
    add_recapture_adapters,
    added_time_ids,
    edm_loss,
    encode_condition,
    encode_latents,
    load_components,
)
from recapture.data.procedural import ProceduralVideoDataset
from recapture.metrics.image import psnr
from recapture.sampling import SamplingConfig, generate
from recapture.training.pretrain.callbacks import machine_line

FPS, MOTION, AUG = 7, 127, 0.02


@dataclass
class Variant:
    name: str
    rank: int | None  # None: full fine-tuning (or no training for base)
    convolutions: bool = False
    train: bool = True


def parse_variant(name: str) -> Variant:
    if name in ("base", "full"):
        return Variant(name, None, train=name == "full")
    match = re.fullmatch(r"lora(\d+)(-conv)?", name)
    if not match:
        raise SystemExit(f"unknown variant {name!r}: use base, full, loraR or loraR-conv (e.g. lora8, lora32-conv)")
    return Variant(name, int(match.group(1)), convolutions=bool(match.group(2)))


def trainable(parts, variant: Variant) -> list[torch.nn.Parameter]:  # noqa: ANN001
    if variant.rank is None:
        params = list(parts.unet.parameters())
        for p in params:
            p.requires_grad_(True)
        return params
    add_recapture_adapters(parts.unet, LoRAConfig(rank=variant.rank, convolutions=variant.convolutions))
    return adapter_parameters(parts.unet, "spatial") + adapter_parameters(parts.unet, "temporal")


def sample_psnr(parts, clip: torch.Tensor, seed: int) -> float:  # noqa: ANN001
    parts.unet.eval()
    with torch.no_grad():
        out = generate(parts, clip[0], clip.shape[0], SamplingConfig(num_inference_steps=20, max_guidance_scale=1.0,
                                                                     seed=seed), adapters=None, progress=False)
    parts.unet.train()
    return float(psnr(out.frames, clip).mean())


def fit_clip(args: argparse.Namespace, variant: Variant, clip: torch.Tensor, objective: EDMConfig) -> dict:
    torch.manual_seed(0)
    parts = load_components(ComponentsConfig(pretrained=args.set, variant=None))
    curve = {0: sample_psnr(parts, clip, args.seed)}
    if not variant.train:
        return {"params": 0, "curve": curve, "s_per_step": None}
    params = trainable(parts, variant)
    lr = args.lr / 2 if variant.rank is None else args.lr
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batch = args.batch
    g = torch.Generator().manual_seed(1)
    z0 = encode_latents(parts.vae, clip)[None].expand(batch, -1, -1, -1, -1)
    ids = added_time_ids(FPS, MOTION, AUG, batch)
    parts.unet.train()
    seconds = 0.0
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        cond = encode_condition(parts.vae, parts.image_encoder, clip[:1], AUG, generator=g)
        loss = edm_loss(parts.unet, z0, cond.cond_latents.expand(batch, -1, -1, -1),
                        cond.image_embeds.expand(batch, -1, -1), ids, config=objective, generator=g).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seconds += time.perf_counter() - t0
        if step % args.every == 0:
            curve[step] = sample_psnr(parts, clip, args.seed)
            print(f"  {variant.name} step {step}: {curve[step]:.2f} dB", file=sys.stderr, flush=True)
    return {"params": sum(p.numel() for p in params), "curve": curve, "s_per_step": seconds / args.steps}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="recapture-tiny", help="the prior: a shipped name or a pretrain export folder")
    parser.add_argument("--clips", type=int, default=2, help="held-out clips, each fitted on its own")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=50, help="sample and score every N steps")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW lr of the LoRA variants (full: half)")
    parser.add_argument("--batch", type=int, default=2, help="noise draws of the clip per step")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--variants", nargs="+", default=["base", "lora8", "lora8-conv", "lora32-conv", "full"])
    parser.add_argument("--size", type=int, nargs=3, default=(8, 64, 96), metavar=("T", "H", "W"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [parse_variant(v) for v in args.variants]
    t, h, w = args.size
    data = ProceduralVideoDataset("eval", args.clips, t, h, w, supersample=2, with_geometry=False, with_target=False)
    clips = [data[i]["video"] for i in range(args.clips)]
    objective = EDMConfig(p_mean=0.7, p_std=1.6, noise_aug_strength=AUG, conditioning_dropout=0.0)
    results = {}
    for variant in variants:
        runs = [fit_clip(args, variant, clip, objective) for clip in clips]
        steps = sorted(runs[0]["curve"])
        results[variant.name] = {
            "params": runs[0]["params"],
            "curve": {s: sum(r["curve"][s] for r in runs) / len(runs) for s in steps},
            "s_per_step": runs[0]["s_per_step"],
        }
    steps = sorted({s for r in results.values() for s in r["curve"]})
    print(f"`python benchmarks/lora_capacity.py {shlex.join(argv if argv is not None else sys.argv[1:])}` — "
          f"{machine_line()}; prior `{args.set}`, {args.clips} held-out clip(s) of {t}x{h}x{w}, batch {args.batch}, "
          f"lr {args.lr:g} (full: {args.lr / 2:g}); PSNR of the clip sampled back from its first frame "
          "(20 Euler steps, guidance 1), mean over clips.\n")
    print("| variant | trainable parameters | " + " | ".join(f"step {s}" for s in steps) + " | s / step |")
    print("| --- | ---: | " + " | ".join("---:" for _ in steps) + " | ---: |")
    for name, r in results.items():
        cells = [f"{r['curve'][s]:.2f}" if s in r["curve"] else "" for s in steps]
        sps = "" if r["s_per_step"] is None else f"{r['s_per_step']:.2f}"
        print(f"| {name} | {r['params']:,} | " + " | ".join(cells) + f" | {sps} |")
    return results


if __name__ == "__main__":
    main()
