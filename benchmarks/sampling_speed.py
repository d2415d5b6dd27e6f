"""Seconds per generated video and peak memory of ``recapture.sampling.generate``, as a Markdown table.

    python benchmarks/sampling_speed.py                      # CUDA: full-size SVD, 14x576x1024 and 14x256x384
    python benchmarks/sampling_speed.py --offload off on     # with and without model CPU offload
    python benchmarks/sampling_speed.py --tiny               # the tiny model (default on CPU)
    python benchmarks/sampling_speed.py --sizes 14x256x384 --steps 5 --profile 12   # where the time goes
    python benchmarks/sampling_speed.py --paths stock fast   # the sampler's fast path against the stock one
    python benchmarks/sampling_speed.py --paths stock fast --repeats 5 --interleave   # ... timed in turns

On CUDA the full-size SVD architecture (UNet 1.5 B parameters with the img2vid-xt config, the
temporal-decoder VAE, CLIP ViT-H/14) is built with random weights, so no download is needed; speed
and memory do not depend on the weights' values. Both ReCapture LoRAs (rank ``--lora-rank``) are
active, as in generation. Each row is the median of ``--repeats`` calls after one warm-up call;
"peak" is ``torch.cuda.max_memory_allocated`` during the call (weights included). With offload the
models start on the CPU and the time includes moving each of them to the GPU once.
On CPU the tiny random model runs (the full-size one takes minutes per step there).

``--paths``: ``fast`` is ``generate`` as it runs (LoRAs merged into float32 weights for the call;
on the CPU temporal convolutions through oneDNN, feed-forward layers in cache-sized blocks of rows
single-token cross-attention without the attention call, ResNet blocks that write their SiLUs and
sums into their own temporaries (``recapture.sampling.cpu_forwards``),
and large tensors from the heap, ``recapture.host_memory``);
``stock`` turns them all off, i.e. every LoRA branch, diffusers' own forwards, PyTorch's own
convolution choice and glibc's fresh mappings, as before they existed; ``no-reuse`` is ``fast``
without the memory reuse. On the CPU "peak GiB" is the peak RSS during the row (its warm-up call
included; the kernel's high-water mark is reset before each row); "system s" is the process's
system CPU time per call (page faults, mostly). The LoRA ``B`` matrices get small
random values (as after training, instead of PEFT's zeros), so the "max |diff|" column (largest
frame difference against the stock path's video, frames in [0, 1]) measures a real merge.
``--interleave`` runs the paths in turns (one video each per round, after a warm-up call each)
instead of one after the other, and adds the median of the rounds' ratios to stock: on a machine
whose speed drifts, the fairer comparison (no peak column then).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import resource
import statistics
import sys

import torch

from recapture.adaptation import (
    LoRAConfig,
    PeftUNetSpatioTemporalConditionModel,
    SVDComponents,
    add_recapture_adapters,
    build_tiny_components,
    svd_scheduler,
)
from recapture.sampling import SamplingConfig, generate, session

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_size(text: str) -> tuple[int, int, int]:
    """``"14x256x384"`` -> ``(14, 256, 384)`` (frames, height, width)."""
    t, h, w = (int(x) for x in text.lower().split("x"))
    return t, h, w


def full_size_components(device: torch.device, dtype: torch.dtype) -> SVDComponents:
    """SVD's architecture with random weights: diffusers' UNet defaults (= img2vid-xt), SVD's VAE and CLIP-H."""
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    with torch.device(device):  # initialise in place: no 6 GB host-to-device copy
        unet = PeftUNetSpatioTemporalConditionModel()  # diffusers defaults = SVD img2vid-xt, with PEFT methods
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=768,
        )
        clip = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=1280,
                intermediate_size=5120,
                num_hidden_layers=32,
                num_attention_heads=16,
                patch_size=14,
                image_size=224,
                projection_dim=1024,
                hidden_act="gelu",
            )
        )
    for module in (unet, vae, clip):
        module.to(dtype).eval()
    return SVDComponents(
        unet=unet, vae=vae, image_encoder=clip, scheduler=svd_scheduler(), num_frames_default=25
    )


def place(components: SVDComponents, device: torch.device) -> None:
    for module in (components.unet, components.vae, components.image_encoder):
        module.to(device)


@contextlib.contextmanager
def sampler_path(path: str):
    """``stock``: without the sampler's CPU forwards (merge and memory reuse off via config)."""
    if path != "stock":
        yield
        return
    real = session.cpu_forwards
    session.cpu_forwards = lambda *modules: contextlib.nullcontext()
    try:
        yield
    finally:
        session.cpu_forwards = real


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: ``/proc/self/clear_refs``); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_gib() -> float | None:
    """The process's peak RSS since the last reset (``VmHWM``), in GiB; None where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def input_image(h: int, w: int) -> torch.Tensor:
    """The benchmark's first frame: the same random image in every run."""
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))


def warm_up(components: SVDComponents, image: torch.Tensor, t: int, config: SamplingConfig) -> None:
    """One untimed 2-step call with ``config`` (kernel selection, allocator, lazy imports)."""
    generate(components, image, t, SamplingConfig(**{**vars(config), "num_inference_steps": 2}),
             adapters=None, progress=False)


def run(
    components: SVDComponents, size: tuple[int, int, int], config: SamplingConfig, repeats: int
) -> tuple[float, float, float, float, float | None, torch.Tensor]:
    """Median (total s, s per step, decode s), system CPU s per call, the largest peak memory in GiB
    (CUDA: allocated; CPU: RSS), the last frames."""
    t, h, w = size
    cpu_peak = reset_peak_rss() and next(components.unet.parameters()).device.type == "cpu"
    image = input_image(h, w)
    warm_up(components, image, t, config)
    system = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    outs = [generate(components, image, t, config, adapters=None, progress=False) for _ in range(repeats)]
    system = (resource.getrusage(resource.RUSAGE_SELF).ru_stime - system) / repeats
    peaks = [o.peak_memory_bytes for o in outs if o.peak_memory_bytes is not None]
    if cpu_peak and (rss := peak_rss_gib()) is not None:
        peaks.append(rss * 2**30)
    return (
        statistics.median(o.timings["total_s"] for o in outs),
        statistics.median(o.timings["s_per_step"] for o in outs),
        statistics.median(o.timings["decode_s"] for o in outs),
        system,
        max(peaks) / 2**30 if peaks else None,
        outs[-1].frames,
    )


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        name = f"{platform.machine()} {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load {load:.1f}"
    return f"{name}; torch {torch.__version__}; {datetime.date.today().isoformat()}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    parser.add_argument(
        "--sizes", nargs="+", default=None, help="TxHxW (default CUDA: 14x576x1024 14x256x384)"
    )
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--min-guidance", type=float, default=1.0)
    parser.add_argument("--max-guidance", type=float, default=3.0, help="> 1 means CFG (two UNet passes)")
    parser.add_argument("--decode-chunk-size", type=int, default=8)
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="default: float16 on CUDA")
    parser.add_argument(
        "--offload",
        nargs="+",
        choices=["off", "on"],
        default=None,
        help="model CPU offload settings to compare (default CUDA: off on; CPU: off)",
    )
    parser.add_argument("--forward-chunking", action="store_true")
    parser.add_argument("--lora-rank", type=int, default=16, help="0: no LoRA adapters")
    parser.add_argument("--paths", nargs="+", choices=["stock", "no-reuse", "fast"], default=["fast"],
                        help="sampler paths to time (see the module docstring); the diff column needs stock first")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--interleave", action="store_true",
                        help="time the paths in turns (one video each per round, --repeats rounds) and add the "
                             "median of each round's ratio to stock: a drifting machine then moves both alike")
    parser.add_argument("--tiny", action="store_true", help="the tiny random model (always on CPU)")
    parser.add_argument("--components", default=None, metavar="SOURCE",
                        help="load a saved set instead (a folder, a hub id, or recapture-tiny: the shipped prior)")
    parser.add_argument("--lora-convolutions", action="store_true",
                        help="adapt the ResNet convolutions too (LoRAConfig.convolutions, as configs/demo.yaml)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also profile one call at the last size (torch.profiler) and print its top ROWS ops")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    tiny = args.tiny or not cuda
    dtype = _DTYPES[args.dtype or ("float16" if cuda else "float32")]
    sizes = [
        parse_size(s)
        for s in (args.sizes or (["14x576x1024", "14x256x384"] if cuda else ["14x64x96", "14x256x384"]))
    ]
    offloads = args.offload or (["off", "on"] if cuda else ["off"])

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.components:
        from recapture.adaptation import ComponentsConfig, load_components

        components = load_components(ComponentsConfig(pretrained=args.components, variant=None), device)
        tiny = False
    else:
        components = build_tiny_components(0) if tiny else full_size_components(device, dtype)
    place(components, device)
    for module in (components.unet, components.vae, components.image_encoder):
        if module.dtype != dtype:
            module.to(dtype)
    if args.lora_rank > 0:
        torch.manual_seed(0)  # PEFT draws the A matrices from the global generator: the same adapters every run
        add_recapture_adapters(components.unet, LoRAConfig(rank=args.lora_rank, convolutions=args.lora_convolutions))
        lora_init = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, param in components.unet.named_parameters():
                if "lora_B" in name:  # as after training (PEFT starts B at zero: the merge would add nothing)
                    param.copy_(0.02 * torch.randn(param.shape, generator=lora_init).to(param))
    params = sum(p.numel() for p in components.unet.parameters()) / 1e6

    lines = [
        f"Sampling speed: `{' '.join(['python', 'benchmarks/sampling_speed.py', *(argv if argv is not None else sys.argv[1:])])}`",
        "",
        f"Machine: {machine_line(device)}. Model: "
        f"{args.components or ('tiny random' if tiny else 'full-size SVD, random weights')} "
        f"(UNet {params:.1f} M parameters incl. LoRA rank {args.lora_rank}{' with convolutions' if args.lora_convolutions else ''}), {str(dtype).removeprefix('torch.')}, "
        f"{args.steps} Euler steps, guidance {args.min_guidance}->{args.max_guidance}"
        f"{' (CFG)' if args.max_guidance > 1 else ''}, decode chunk {args.decode_chunk_size}.",
        "",
        "| frames x H x W | offload | path | s / video | s / step | decode s | system s | peak GiB | max \\|diff\\| vs stock |"
        + (" x stock (median of rounds) |" if args.interleave else ""),
        "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.interleave else ""),
    ]
    for size in sizes:
        for offload in offloads:
            place(components, torch.device("cpu") if offload == "on" and cuda else device)
            stock_frames = None
            configs = {
                path: SamplingConfig(
                    num_inference_steps=args.steps,
                    min_guidance_scale=args.min_guidance,
                    max_guidance_scale=args.max_guidance,
                    decode_chunk_size=args.decode_chunk_size,
                    cpu_offload=offload == "on",
                    forward_chunking=args.forward_chunking,
                    merge_lora=path != "stock",
                    reuse_host_memory=path == "fast",
                )
                for path in args.paths
            }
            if args.interleave:
                lines += interleaved_rows(components, size, offload, configs, args.repeats)
                config = configs[args.paths[-1]]
                continue
            for path, config in configs.items():
                try:
                    with sampler_path(path):
                        total, per_step, decode, system, peak, frames = run(components, size, config, args.repeats)
                    stock_frames = frames if path == "stock" else stock_frames
                    diff = "-" if stock_frames is None or path == "stock" else f"{(frames - stock_frames).abs().max().item():.1e}"
                    row = (
                        f"{total:.2f} | {per_step:.3f} | {decode:.2f} | {system:.2f} | {'-' if peak is None else f'{peak:.2f}'} "
                        f"| {diff}"
                    )
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    row = "OOM | - | - | - | - | -"
                lines.append(f"| {'x'.join(map(str, size))} | {offload} | {path} | {row} |")
                print(lines[-1], file=sys.stderr, flush=True)
    if args.profile:
        lines += ["", *profile_rows(components, sizes[-1], config, args.profile, device)]
    table = "\n".join(lines)
    print(table)
    return table


def interleaved_rows(components: SVDComponents, size: tuple[int, int, int], offload: str,
                     configs: dict[str, SamplingConfig], rounds: int) -> list[str]:
    """The paths timed in turns: a warm-up call each, then ``rounds`` rounds of one video per path.
    Rows as in the main table (system s per video; no peak), plus each path's median ratio to stock
    over the rounds."""
    t, h, w = size
    image = input_image(h, w)
    outs = {path: [] for path in configs}
    systems = {path: 0.0 for path in configs}
    for path, config in configs.items():
        with sampler_path(path):
            warm_up(components, image, t, config)
    for _ in range(rounds):
        for path, config in configs.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            with sampler_path(path):
                outs[path].append(generate(components, image, t, config, adapters=None, progress=False))
            systems[path] += resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
    stock = outs.get("stock")
    rows = []
    for path, results in outs.items():
        total = [o.timings["total_s"] for o in results]
        ratio = diff = "-"
        if stock is not None and path != "stock":
            ratio = f"{statistics.median(a / b.timings['total_s'] for a, b in zip(total, stock, strict=True)):.3f}"
            diff = f"{(results[-1].frames - stock[-1].frames).abs().max().item():.1e}"
        rows.append(
            f"| {'x'.join(map(str, size))} | {offload} | {path} | {statistics.median(total):.2f} "
            f"| {statistics.median(o.timings['s_per_step'] for o in results):.3f} "
            f"| {statistics.median(o.timings['decode_s'] for o in results):.2f} | {systems[path] / rounds:.2f} | - "
            f"| {diff} | {ratio} |"
        )
        print(rows[-1], f"(each: {', '.join(f'{v:.2f}' for v in total)})", file=sys.stderr, flush=True)
    return rows


def profile_rows(components: SVDComponents, size: tuple[int, int, int], config: SamplingConfig, rows: int,
                 device: torch.device) -> list[str]:
    """The top ``rows`` ops by self time of one ``generate`` call (after the timed ones), as Markdown."""
    from torch.profiler import ProfilerActivity, profile

    t, h, w = size
    image = input_image(h, w)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        out = generate(components, image, t, config, adapters=None, progress=False)
    events = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total if device.type == "cuda"
                    else e.self_cpu_time_total, reverse=True)
    total = sum((e.self_device_time_total if device.type == "cuda" else e.self_cpu_time_total) for e in events)
    timings = ", ".join(f"{k} {v:.2f}" for k, v in out.timings.items() if k.endswith("_s"))
    lines = [f"Profile of one call at {'x'.join(map(str, size))} ({config.num_inference_steps} steps; {timings}):",
             "", "| op | self time (ms) | share | calls |", "|---|---:|---:|---:|"]
    for e in events[:rows]:
        self_us = e.self_device_time_total if device.type == "cuda" else e.self_cpu_time_total
        lines.append(f"| `{e.key}` | {self_us / 1e3:.0f} | {100 * self_us / max(total, 1):.1f}% | {e.count} |")
    return lines


if __name__ == "__main__":
    main()
