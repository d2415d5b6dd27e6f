"""One command for anyone with a GPU: the whole `configs/orbit.yaml` recipe at full size, timed.

    python benchmarks/gpu_check.py                      # 14x256x384, 20 steps, generation + refinement
    python benchmarks/gpu_check.py --size 1024 --steps 400 --out gpu_check.md   # the paper's recipe
    python benchmarks/gpu_check.py --compile            # the same with model.compile_unet (torch.compile)

No download: the full-size SVD img2vid architecture (1.52 B-parameter UNet, VAE, CLIP ViT-H) and
Depth Anything V2 Small are built from their published configs with random weights and written in
the hub layout (fp16 variant, ~6.5 GB) into a temporary folder; a generated example clip is written
as an mp4. Then, exactly as a user runs it (in-process ``recapture fit`` with only weights, video,
size, steps, accelerator and output overridden, plus the ``StepTimer`` callback):
depth -> anchor -> encoding -> masked LoRA fine-tuning (alternating temporal / spatial steps,
gradient checkpointing, bf16) -> generation (25 steps, CFG) -> SDEdit refinement, and then
``recapture generate`` with fit's seed, which must reproduce fit's video bit for bit.

It prints a Markdown table (per-stage seconds, median step time per kind, peak GPU memory) with the
command, the machine and the date, and exits non-zero on any error. Random weights make the videos
noise; every timing and memory figure is that of the real recipe. Budget: under 8 minutes on one
H100/H200 at the default size.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _row(name: str, value: float | None, unit: str = "s") -> str:
    return f"| {name} | {'n/a' if value is None else f'{value:.3f}'} {unit} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384, help="long side of the frames (384 -> 384x256)")
    parser.add_argument("--steps", type=int, default=20, help="fine-tuning steps (paper: 400)")
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--sampling-steps", type=int, default=None,
                        help="override the config's 25 sampling/refinement steps (only for quick checks)")
    parser.add_argument("--workdir", default=None, help="where to write the random weights (default: a temp dir)")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU (only to test this script)")
    parser.add_argument("--compile", action="store_true",
                        help="model.compile_unet true: the first step of each kind compiles (left out of the medians)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)
        return 2
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from recapture.adaptation.full_size import write_random_svd
    from recapture.cli import cli_main
    from recapture.data.example import make_example_clip
    from recapture.depth.transformers_backend import write_random_depth_model
    from recapture.io import write_video

    work = Path(args.workdir or tempfile.mkdtemp(prefix="recapture-gpu-check-"))
    stages: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        svd = write_random_svd(work / "stable-video-diffusion-img2vid", variants=("fp16",))
        depth = write_random_depth_model(work / "Depth-Anything-V2-Small-hf")
        stages["build_random_weights_s"] = time.perf_counter() - t0
        height = max(64, round(args.size * 2 / 3 / 64) * 64)
        clip, _, _ = make_example_clip(num_frames=args.frames, height=height, width=args.size)
        video = write_video(work / "clip.mp4", clip.frames, clip.fps)
        run = work / "run"
        common = [
            "--config", str(REPO / "configs" / "orbit.yaml"),
            "--model.components.pretrained", str(svd),
            "--data.depth.model", str(depth),
            "--data.video", str(video),
            "--data.size", str(args.size),
            "--data.num_frames", str(args.frames),
            "--data.anchor.cache_dir", str(work / "cache" / "anchors"),
            "--data.latent_cache_dir", str(work / "cache" / "latents"),
            "--trainer.accelerator", accelerator,
            "--trainer.max_steps", str(args.steps),
            "--trainer.logger", "false",
            "--trainer.default_root_dir", str(run),
        ]
        if args.compile:
            common += ["--model.compile_unet", "true"]
        if args.sampling_steps is not None:
            common += ["--model.sampling.num_inference_steps", str(args.sampling_steps),
                       "--model.refine.num_inference_steps", str(args.sampling_steps)]
        t0 = time.perf_counter()
        cli_main(["fit", *common, "--trainer.callbacks+=recapture.training.callbacks.StepTimer"])
        stages["fit_command_s"] = time.perf_counter() - t0
        report = json.loads((run / "report.json").read_text())
        t0 = time.perf_counter()
        cli_main(["generate", *common, "--seed", "0", "--output", str(work / "gen")])
        stages["generate_command_s"] = time.perf_counter() - t0
        regenerated = json.loads((work / "gen" / "report.json").read_text())
        same = regenerated["frames_sha256"] == report["frames_sha256"]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    t = report["timings_s"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    lines = [
        f"`python benchmarks/gpu_check.py {' '.join(argv if argv is not None else sys.argv[1:])}` - {device}, "
        f"torch {torch.__version__}, {datetime.date.today().isoformat()}; clip {args.frames}x{height}x{args.size}, "
        f"{args.steps} steps, full-size random weights (fp16 files, bf16-mixed), gradient checkpointing on"
        f"{', UNet compiled (torch.compile, inductor)' if args.compile else ''}",
        "",
        "| stage | value |",
        "| --- | ---: |",
        _row("build random weights (not part of a run)", stages["build_random_weights_s"]),
        _row("depth (Depth Anything V2 Small)", t.get("anchor_depth_s")),
        _row("anchor render", t.get("anchor_render_s")),
        _row("encode (VAE + CLIP, once)", t.get("encode_s")),
        _row(f"fine-tuning, {args.steps} steps", t.get("train_s")),
        _row("step, temporal (median)", t.get("step_temporal_s")),
        _row("step, spatial (median)", t.get("step_spatial_s")),
        _row(f"generation ({args.sampling_steps or 25} steps, CFG)", t.get("generate_s")),
        _row("SDEdit refinement", t.get("refine_s")),
        _row("fit total (report.json)", t.get("total_fit_s")),
        _row("`recapture fit` wall, incl. model loading", stages["fit_command_s"]),
        _row("`recapture generate` wall", stages["generate_command_s"]),
        _row("peak GPU memory, training", t.get("train_peak_memory_gb"), "GiB"),
        _row("peak GPU memory, whole fit", report.get("peak_memory_gb"), "GiB"),
        f"| generate --seed 0 reproduces fit's frames (sha256) | {'yes' if same else 'NO'} |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
