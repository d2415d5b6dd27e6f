"""Frames per second of the anchor renderer (hard z-buffer and soft splat), as a Markdown table.

    python benchmarks/anchor_render.py                       # 14x256x384 and 14x576x1024, CPU (+CUDA)
    python benchmarks/anchor_render.py --sizes 14x256x384 --modes hard --devices cpu --repeats 5

The scene is synthetic (random colours, a floor-and-backdrop depth with noise) moved along a 10
degree orbit, so every frame has occlusions and disocclusions like a real anchor. Times are the
best of ``--repeats`` runs of :func:`recapture.anchor.render_anchor` for a whole clip, after a
warm-up run; on CUDA the device is synchronised before the clock stops.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import torch

from recapture.anchor import render_anchor
from recapture.cameras import intrinsics_from_fov, make_trajectory
from recapture.depth import ground_plane_depth


def parse_size(text: str) -> tuple[int, int, int]:
    """``"14x256x384"`` -> ``(14, 256, 384)`` (frames, height, width)."""
    t, h, w = (int(x) for x in text.lower().split("x"))
    return t, h, w


def make_scene(t: int, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Frames ``(T, 3, H, W)``, depth ``(T, 1, H, W)``, K ``(3, 3)`` and c2w ``(T, 4, 4)`` in depth units."""
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(t, 3, h, w, generator=g)
    depth = ground_plane_depth(h, w)[None].expand(t, 1, h, w) * (
        1 + 0.05 * torch.rand(t, 1, h, w, generator=g)
    )
    scale = float(depth[0].median())
    c2w = make_trajectory("orbit", 10.0, t).scaled(scale).c2w
    K = intrinsics_from_fov(60.0, h, w)
    return frames.to(device), depth.to(device), K.to(device), c2w.to(device)


def time_render(
    scene: tuple[torch.Tensor, ...], mode: str, footprint: int, repeats: int, backward: bool
) -> tuple[float, float, float]:
    """Best (minimum) wall seconds and process CPU seconds per clip, and the mean coverage.

    The minimum over repeats is the least disturbed run, the right estimate on a shared machine;
    the CPU time (all threads) is reported alongside because it is less sensitive to contention.
    """
    frames, depth, K, c2w = scene
    device = frames.device

    def once() -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        if backward:
            f = frames.clone().requires_grad_()
            out = render_anchor(f, depth, K, c2w, mode=mode, footprint=footprint)
            out.frames.sum().backward()
        else:
            with torch.no_grad():
                out = render_anchor(frames, depth, K, c2w, mode=mode, footprint=footprint)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, time.process_time() - cpu_start, float(out.coverage.mean())

    once()  # warm-up (allocator, kernels)
    runs = [once() for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]


def machine_line(devices: list[str]) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts = [
        f"{platform.machine()} {os.cpu_count()} CPUs (torch threads {torch.get_num_threads()})",
        f"load avg {load:.1f}",
        f"torch {torch.__version__}",
        datetime.date.today().isoformat(),
    ]
    if "cuda" in devices:
        parts.insert(1, torch.cuda.get_device_name(0))
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="14x256x384,14x576x1024", help="comma-separated TxHxW")
    parser.add_argument("--modes", default="hard,soft", help="comma-separated: hard, soft")
    parser.add_argument(
        "--devices", default=None, help="comma-separated (default: cpu, plus cuda if available)"
    )
    parser.add_argument("--footprint", type=int, default=1, help="hard splat footprint")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (best reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU rows")
    parser.add_argument("--backward", action="store_true", help="also time the backward pass (soft mode)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = (
        args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    print(f"Machine: {machine_line(devices)}\n")
    print("| clip (TxHxW) | mode | device | wall ms / clip | frames / s | CPU ms / clip | coverage |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for size in args.sizes.split(","):
        t, h, w = parse_size(size)
        for device in devices:
            scene = make_scene(t, h, w, torch.device(device))
            for mode in args.modes.split(","):
                backward = args.backward and mode == "soft"
                seconds, cpu, coverage = time_render(scene, mode, args.footprint, args.repeats, backward)
                label = mode + (
                    f" (footprint {args.footprint})" if mode == "hard" and args.footprint > 1 else ""
                )
                label += " fwd+bwd" if backward else ""
                print(
                    f"| {t}x{h}x{w} | {label} | {device} | {1000 * seconds:.0f} | {t / seconds:.1f} "
                    f"| {1000 * cpu:.0f} | {coverage:.1%} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
