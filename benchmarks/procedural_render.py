"""Clips per second of the procedural video generator (scene + camera sampling + ray casting), as Markdown.

    python benchmarks/procedural_render.py                    # 8x64x96 and 8x128x192, supersample 1 and 2
    python benchmarks/procedural_render.py --sizes 8x64x96 --supersample 1 --clips 50 --threads 1

Each row renders ``--clips`` consecutive training clips (source path only, like the endless
training stream) after one warm-up clip, on ``--threads`` torch threads; times are wall-clock and
CPU per clip (the median of ``--repeats`` passes). The prior's training renders on the fly on
CPU data-loader workers, so the target is well under 0.1 s per 8x64x96 clip on one core.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch

from recapture.data.procedural import make_clip, render_path


def parse_size(text: str) -> tuple[int, int, int]:
    """``"8x64x96"`` -> ``(8, 64, 96)`` (frames, height, width)."""
    t, h, w = (int(x) for x in text.lower().split("x"))
    return t, h, w


def machine_line(threads: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count()} CPUs (torch threads {threads}), load {load:.1f}, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}"
    )


def time_clips(
    t: int, h: int, w: int, supersample: int, clips: int, repeats: int
) -> tuple[float, float, float]:
    """Median wall and CPU seconds per clip (sample + render), and the sampling share of the wall time."""
    warm = make_clip("train", 10**6, t, (h, w))
    render_path(warm.scene, warm.source, (h, w), supersample)
    walls, cpus, samples = [], [], []
    for _ in range(repeats):
        wall0, cpu0, sampling = time.perf_counter(), time.process_time(), 0.0
        for index in range(clips):
            s0 = time.perf_counter()
            clip = make_clip("train", index, t, (h, w))
            sampling += time.perf_counter() - s0
            render_path(clip.scene, clip.source, (h, w), supersample)
        walls.append((time.perf_counter() - wall0) / clips)
        cpus.append((time.process_time() - cpu0) / clips)
        samples.append(sampling / clips)
    return statistics.median(walls), statistics.median(cpus), statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="8x64x96,8x128x192", help="comma-separated TxHxW")
    parser.add_argument("--supersample", default="1,2", help="comma-separated colour sub-pixel rays per side")
    parser.add_argument("--clips", type=int, default=40, help="clips per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    command = "python benchmarks/procedural_render.py" + (f" {' '.join(argv)}" if argv else "")
    print(f"`{command}` — {machine_line(args.threads)}\n")
    print(
        "| clip (TxHxW) | supersample | wall ms / clip | clips / s | CPU ms / clip | of which sampling ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes.split(","):
        t, h, w = parse_size(size)
        for ss in (int(x) for x in args.supersample.split(",")):
            clips = args.clips if h * w * ss * ss <= 64 * 96 * 4 else max(5, args.clips // 4)
            wall, cpu, sampling = time_clips(t, h, w, ss, clips, args.repeats)
            print(
                f"| {t}x{h}x{w} | {ss} | {1000 * wall:.1f} | {1 / wall:.1f} | {1000 * cpu:.1f} | {1000 * sampling:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
