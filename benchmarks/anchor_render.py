"""Speed of the anchor renderer (hard z-buffer, footprint 3, soft splat) against a naive z-buffer.

    python benchmarks/anchor_render.py                       # 14x256x384 and 14x576x1024, CPU (+CUDA)
    python benchmarks/anchor_render.py --sizes 14x256x384 --modes hard,soft --devices cpu --repeats 5

The scene is synthetic (random colours, a floor-and-backdrop depth with noise) moved along a 10
degree orbit, so every frame has occlusions and disocclusions like a real anchor. Every row renders
the whole clip from the same inputs (frames, depth, K, c2w). The first row of each clip is the
reference: :func:`naive_zbuffer`, the plain ~25-line ``scatter_reduce("amin")`` splat (packed
depth/index keys, one gather, no input checks), whose output the renderer must match exactly. The
rows are timed interleaved (one run of each per round, best of ``--repeats`` rounds after a
warm-up), so on a shared machine the ratio columns are far more trustworthy than the absolute
times; on CUDA the device is synchronised before the clock stops.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import time
from collections.abc import Callable

import torch
from kornia.geometry.depth import unproject_meshgrid

from recapture.anchor import SplatSettings, render_anchor
from recapture.anchor.render import NEAR_FRACTION
from recapture.cameras import intrinsics_from_fov, make_trajectory
from recapture.depth import ground_plane_depth

Scene = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def parse_size(text: str) -> tuple[int, int, int]:
    """``"14x256x384"`` -> ``(14, 256, 384)`` (frames, height, width)."""
    t, h, w = (int(x) for x in text.lower().split("x"))
    return t, h, w


def make_scene(t: int, h: int, w: int, device: torch.device) -> Scene:
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


def naive_zbuffer(frames: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor):
    """The reference: a plain z-buffer splat of a whole clip, written the obvious way.

    Lift with kornia's pixel rays, one homogeneous matrix product into the target cameras, project,
    pack ``(quantised depth, point index)`` keys, one ``scatter_reduce("amin")`` per clip, one
    gather. Same conventions as ``render_anchor`` in hard mode (nearest point wins, ties to the
    lower index, points nearer than ``NEAR_FRACTION`` of the frame's farthest depth dropped).

    Returns:
        ``(frames (T, 3, H, W), mask (T, 1, H, W))``.
    """
    t, c, h, w = frames.shape
    n = h * w
    rays = unproject_meshgrid(h, w, K[None]).view(1, n, 3)
    pts = rays * depth.view(t, n, 1)
    rot_t = c2w[:, :3, :3].mT
    w2c = torch.cat([torch.cat([rot_t, -rot_t @ c2w[:, :3, 3:]], 2), c2w[:, 3:]], 1)
    cam = torch.bmm(torch.cat([pts, torch.ones_like(pts[..., :1])], -1), w2c.mT)
    z = cam[..., 2]
    inv_z = 1 / z
    u = torch.floor(cam[..., 0] * inv_z * K[0, 0] + K[0, 2] + 0.5).long()
    v = torch.floor(cam[..., 1] * inv_z * K[1, 1] + K[1, 2] + 0.5).long()
    near = NEAR_FRACTION * depth.view(t, n).amax(1, keepdim=True)
    ok = (z > near) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pix = torch.where(ok, v * w + u, n)
    bits = n.bit_length()
    levels = (1 << (62 - bits)) - 1
    scale = (levels / z.amax(1, keepdim=True).double()).to(z.dtype)
    key = ((z * scale).clamp(0, levels).long() << bits) | torch.arange(n, device=z.device)
    empty = torch.iinfo(torch.int64).max
    buf = torch.full((t, n + 1), empty, dtype=torch.int64, device=z.device)
    buf = buf.scatter_reduce_(1, pix, key, "amin")[:, :n]
    hit = buf != empty
    src = torch.where(hit, buf & ((1 << bits) - 1), 0)
    image = frames.view(t, c, n).gather(2, src[:, None].expand(t, c, n)) * hit[:, None]
    return image.view(t, c, h, w), hit.view(t, 1, h, w).to(frames.dtype)


def row_fns(scene: Scene, modes: list[str], backward: bool) -> dict[str, Callable[[], float]]:
    """One callable per table row (label -> run once, return the coverage); the naive row first."""
    frames, depth, K, c2w = scene

    def naive() -> float:
        with torch.no_grad():
            return float(naive_zbuffer(frames, depth, K, c2w)[1].mean())

    def render(mode: str, footprint: int, grad: bool) -> Callable[[], float]:
        splat = SplatSettings(mode=mode, footprint=footprint)

        def once() -> float:
            if grad:
                f = frames.clone().requires_grad_()
                out = render_anchor(f, depth, K, c2w, splat=splat)
                out.frames.sum().backward()
            else:
                with torch.no_grad():
                    out = render_anchor(frames, depth, K, c2w, splat=splat)
            return float(out.coverage.mean())

        return once

    rows: dict[str, Callable[[], float]] = {"naive z-buffer (reference)": naive}
    for m in modes:
        mode, _, fp = m.partition(":")
        footprint = int(fp or 1)
        label = mode + (f" (footprint {footprint})" if footprint > 1 else "")
        rows[label] = render(mode, footprint, False)
        if backward and mode == "soft":
            rows[label + " fwd+bwd"] = render(mode, footprint, True)
    return rows


def time_rows(
    rows: dict[str, Callable[[], float]], repeats: int, device: torch.device
) -> dict[str, tuple[float, float, float]]:
    """Best wall and CPU seconds per row and its coverage, running the rows interleaved.

    One run of every row per round, so a burst of load from other jobs hits all rows alike; the
    minimum over rounds is the least disturbed run. CPU time (all threads) is reported alongside.
    """

    def once(fn: Callable[[], float]) -> tuple[float, float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        coverage = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, time.process_time() - cpu_start, coverage

    for fn in rows.values():  # warm-up (allocator, kernels)
        once(fn)
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in rows}
    for _ in range(repeats):
        for label, fn in rows.items():
            runs[label].append(once(fn))
    return {k: (min(r[0] for r in v), min(r[1] for r in v), v[0][2]) for k, v in runs.items()}


def outputs_match(scene: Scene) -> bool:
    """Whether ``render_anchor`` (hard mode, the default) reproduces the naive z-buffer bit for bit."""
    with torch.no_grad():
        image, mask = naive_zbuffer(*scene)
        out = render_anchor(*scene)
    return torch.equal(out.frames, image) and torch.equal(out.mask, mask)


def machine_line(devices: list[str]) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    parts = [
        f"{platform.machine()} {os.cpu_count()} CPUs (torch threads {torch.get_num_threads()})",
        "load avg " + " / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)",
        f"torch {torch.__version__}",
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    ]
    if "cuda" in devices:
        parts.insert(1, torch.cuda.get_device_name(0))
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="14x256x384,14x576x1024", help="comma-separated TxHxW")
    parser.add_argument(
        "--modes", default="hard,hard:3,soft", help="comma-separated: hard, hard:FOOTPRINT, soft"
    )
    parser.add_argument(
        "--devices", default=None, help="comma-separated (default: cpu, plus cuda if available)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (best reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU rows")
    parser.add_argument("--backward", action="store_true", help="also time the backward pass (soft mode)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = (
        args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    modes = args.modes.split(",")
    print(f"Machine: {machine_line(devices)}\n")
    print(
        "| clip (TxHxW) | mode | device | wall ms / clip | frames / s | CPU ms / clip "
        "| x naive (wall) | x hard (wall) | coverage |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    notes = []
    for size in args.sizes.split(","):
        t, h, w = parse_size(size)
        for device in devices:
            scene = make_scene(t, h, w, torch.device(device))
            if not outputs_match(scene):
                notes.append(f"{size} {device}: render_anchor(hard) differs from the naive z-buffer")
            results = time_rows(row_fns(scene, modes, args.backward), args.repeats, torch.device(device))
            ref = results["naive z-buffer (reference)"][0]
            hard = results.get("hard", (math.nan,))[0]
            for label, (seconds, cpu, coverage) in results.items():
                vs_hard = f"{seconds / hard:.2f}" if label.startswith("soft") else ""
                print(
                    f"| {t}x{h}x{w} | {label} | {device} | {1000 * seconds:.0f} | {t / seconds:.1f} "
                    f"| {1000 * cpu:.0f} | {seconds / ref:.2f} | {vs_hard} | {coverage:.1%} |",
                    flush=True,
                )
    print(f"\nLoad after the run: {machine_line(devices).split(', ')[1]}")
    print("\n".join(notes) if notes else "render_anchor(hard) output == naive z-buffer output, bit for bit.")


if __name__ == "__main__":
    main()
