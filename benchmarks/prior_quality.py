"""Quality of a trained prior (a set written by `recapture pretrain`), as a Markdown table.

    python benchmarks/prior_quality.py runs/prior-unet/export --strip prior_samples.png
    python benchmarks/prior_quality.py runs/prior-unet/export --clips 64 --sample-clips 8 --steps 25 --threads 1

Reports the VAE's reconstruction PSNR (posterior mode, mean over frames) on ``--clips`` held-out
procedural clips (``split="eval"``: seeds never used in training) and, for ``--sample-clips`` of
them, samples from their first frames with the stock SVD sampler (``recapture.sampling.generate``):
PSNR of the sampled frames 1.. to the ground truth, against the static baseline (the first frame
repeated), PSNR of the sampled frame 0 to the prompt, and frame-to-frame motion (pure noise flickers
far above the true clips' motion). The frame strip (``--strip``) shows per clip the held-out first
frame and a few sampled frames. Clip size and length default to the set's ``pretrain.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from recapture.adaptation import ComponentsConfig, load_components
from recapture.data.procedural import ProceduralVideoDataset
from recapture.training.pretrain.callbacks import machine_line
from recapture.training.pretrain.quality import (
    reconstruction_colour,
    reconstruction_psnr,
    sample_quality,
    saturation,
    write_strip,
)


def clip_settings(folder: Path, args: argparse.Namespace) -> tuple[int, int, int]:
    """``(T, H, W)`` from the flags, else the set's record, else 8x64x96."""
    record = folder / "pretrain.json"
    data = json.loads(record.read_text())["data"] if record.is_file() else {}
    t = args.frames or data.get("num_frames", 8)
    h = args.height or data.get("height", 64)
    w = args.width or data.get("width", 96)
    return t, h, w


def eval_clips(n: int, t: int, h: int, w: int) -> torch.Tensor:
    """The first ``n`` held-out clips, ``(n, T, 3, H, W)``."""
    data = ProceduralVideoDataset("eval", n, t, h, w, with_geometry=False, with_target=False)
    return torch.stack([data[i]["video"] for i in range(n)])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set", type=Path, help="folder of the trained set (diffusers pipeline layout)")
    parser.add_argument("--clips", type=int, default=32, help="held-out clips for the VAE PSNR")
    parser.add_argument("--sample-clips", type=int, default=4, help="held-out clips sampled from their first frame")
    parser.add_argument("--steps", type=int, default=12, help="Euler steps per sample")
    parser.add_argument("--max-guidance", type=float, default=3.0, help="max guidance scale (1 -> this over frames)")
    parser.add_argument("--strip", type=Path, default=None, help="write the frame strip PNG here")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default: the set's)")
    parser.add_argument("--height", type=int, default=None, help="frame height (default: the set's)")
    parser.add_argument("--width", type=int, default=None, help="frame width (default: the set's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="device to run on (cpu, cuda)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t, h, w = clip_settings(args.set, args)
    parts = load_components(ComponentsConfig(pretrained=str(args.set), variant=None, num_frames=t), device=args.device)
    for module in (parts.unet, parts.vae, parts.image_encoder):
        module.to(args.device)
    clips = eval_clips(max(args.clips, args.sample_clips), t, h, w)
    t0 = time.perf_counter()
    rec = reconstruction_psnr(parts.vae, clips[: args.clips])
    t_rec = time.perf_counter() - t0
    colour = reconstruction_colour(parts.vae, clips[: args.clips])
    t0 = time.perf_counter()
    quality = sample_quality(parts, clips[: args.sample_clips], num_inference_steps=args.steps,
                             max_guidance_scale=args.max_guidance)
    t_sample = time.perf_counter() - t0
    frames = quality.pop("frames")
    if args.strip is not None:
        write_strip(args.strip, clips[: args.sample_clips], frames)

    command = shlex.join(["python", "benchmarks/prior_quality.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"`{command}` — {machine_line()}\n")
    print(f"Set `{args.set}`: clips {t}x{h}x{w}, held-out split `eval`.\n")
    print("| figure | value |")
    print("| --- | ---: |")
    rows = {
        f"VAE reconstruction PSNR, mean of {len(rec)} clips (dB)": float(rec.mean()),
        "VAE reconstruction PSNR, worst clip (dB)": float(rec.min()),
        "VAE colour kept (saturation of reconstructions / of the clips; 1 = all, 0 = grey)": colour,
        "sample colour (saturation of samples / of the true clips)":
            saturation(frames) / max(saturation(clips[: args.sample_clips]), 1e-8),
        f"sample PSNR to ground truth, frames 1.., {quality['sample_clips']} clips (dB)": quality["sample_psnr_db"],
        "static baseline (first frame repeated) PSNR (dB)": quality["static_psnr_db"],
        "sampled frame 0 PSNR to the prompt (dB)": quality["sample_frame0_psnr_db"],
        "sample motion (mean abs frame difference)": quality["sample_motion"],
        "true motion (mean abs frame difference)": quality["true_motion"],
        "VAE PSNR time (s)": t_rec,
        f"sampling time, {args.steps} steps (s per clip)": t_sample / max(1, quality["sample_clips"]),
    }
    for name, value in rows.items():
        print(f"| {name} | {value:.3g} |" if abs(value) < 100 else f"| {name} | {value:.1f} |")
    if args.strip is not None:
        print(f"\nFrame strip: `{args.strip}` (per row: held-out first frame | sampled frames).")
    return rows


if __name__ == "__main__":
    main()
