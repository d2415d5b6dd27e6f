"""Time one ReCapture fine-tuning step (temporal and spatial kinds) and its peak memory.

Temporal step: a clip of T frames, masked EDM loss, temporal LoRA trained, spatial LoRA active
and frozen. Spatial step: T single frames under the temporal bypass (temporal compute skipped),
spatial LoRA trained. Both include forward, backward and the AdamW update.

On CUDA it runs the FULL-size SVD UNet architecture (diffusers defaults = img2vid-xt config,
1.52 B parameters) with random weights (no download), bf16 autocast and SDPA attention, with and
without gradient checkpointing, at 14x256x384 and 14x576x1024. On CPU it runs the tiny model
(and, with ``--cpu-full-size``, one full-size step at a small size). FLOPs are counted once per
configuration on the meta device with ``torch.utils.flop_counter.FlopCounterMode`` (model FLOPs:
recomputation by checkpointing not included); utilisation is against ``--peak-tflops``.

Examples::

    python benchmarks/finetune_step.py                          # CPU: tiny model
    python benchmarks/finetune_step.py --peak-tflops 989        # H100 SXM dense bf16
    python benchmarks/finetune_step.py --sizes 14x576x1024 --grad-checkpointing on --steps 20
    python benchmarks/finetune_step.py --compile both            # eager and torch.compile rows

``--compile on`` runs the step through ``torch.compile`` of the UNet (what ``model.compile_unet``
does); the first step of each row compiles (a fresh dynamo cache per row) and is reported
separately, not in the step times.

Prints a Markdown table (with the command, machine and date); ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from recapture.adaptation import (  # noqa: E402
    BypassTargets,
    EDMConfig,
    LoRAConfig,
    PeftUNetSpatioTemporalConditionModel,
    add_recapture_adapters,
    build_tiny_components,
    bypass_targets,
    set_trainable_adapter,
    step_context,
    step_loss,
)
from recapture.utils import atomic_path  # noqa: E402

KINDS = ("temporal", "spatial")
LATENT_FACTOR = 8  # pixels per latent of SVD's VAE (no VAE is built here: vae_factor of the real one)


@dataclass
class Row:
    kind: str
    size: tuple[int, int, int]
    model: str
    precision: str
    checkpointing: bool
    times_s: list[float]
    peak_gib: float | None
    flops: float | None
    note: str = ""
    compile_s: float | None = None  # the first (compiling) step of a compiled row


def parse_size(text: str) -> tuple[int, int, int]:
    """``"14x256x384"`` -> ``(14, 256, 384)`` (frames, height, width; H and W multiples of 8)."""
    try:
        t, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like 14x256x384 (frames x H x W)") from err
    if h % 8 or w % 8 or min(t, h, w) < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: H and W must be positive multiples of 8")
    return t, h, w


def build_unet(model: str, device: torch.device, dtype: torch.dtype, rank: int) -> torch.nn.Module:
    """The tiny UNet or the full-size SVD UNet (random weights) with both ReCapture LoRAs."""
    if model == "tiny":
        unet = build_tiny_components(0).unet
    else:
        with torch.device(device):
            unet = PeftUNetSpatioTemporalConditionModel()  # diffusers defaults = SVD img2vid-xt
    # AlphaBlender creates its mix factor with the legacy torch.Tensor constructor (always CPU).
    unet.to(device=device, dtype=dtype)
    add_recapture_adapters(unet, LoRAConfig(rank=rank))  # LoRA weights stay fp32 over a bf16 base
    return unet


def _batch(latents: torch.Tensor, cond: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor) -> dict:
    """The data module's batch layout (both kinds share the clip: T single frames under the bypass)."""
    return {f"{kind}_{name}": value for kind in KINDS
            for name, value in (("latents", latents), ("cond_latents", cond), ("image_embeds", embeds))} | {
        "temporal_mask": mask}


def make_batch(unet: torch.nn.Module, size: tuple[int, int, int], device: torch.device) -> dict:
    t, h, w = size
    f = LATENT_FACTOR
    g = torch.Generator(device=device).manual_seed(0)
    lat = (1, t, 4, h // f, w // f)
    mask = torch.ones(1, t, 1, h // f, w // f, device=device)
    mask[:, 1:, :, : h // (4 * f), : w // (2 * f)] = 0  # a disocclusion-like hole on all but the first frame
    dim = unet.config.cross_attention_dim
    return _batch(torch.randn(lat, generator=g, device=device),
                  torch.randn(lat[0], *lat[2:], generator=g, device=device),
                  torch.randn(1, 1, dim, generator=g, device=device), mask)


def loss_fn(unet: torch.nn.Module, kind: str, batch: dict, generator: torch.Generator | None,
            targets: BypassTargets | None = None, model: torch.nn.Module | None = None) -> torch.Tensor:
    """The module's own step (:func:`recapture.adaptation.step_loss`) under its step context.

    ``model``: what runs the forward (``torch.compile(unet)``); default ``unet`` itself.
    """
    with step_context(unet, kind, targets=targets):
        return step_loss(unet if model is None else model, batch, kind, EDMConfig(), generator=generator).loss


def count_flops(model: str, kind: str, size: tuple[int, int, int], rank: int) -> float:
    """Model FLOPs of one training step (forward + backward), counted on the meta device."""
    meta = torch.device("meta")
    unet = build_unet(model, meta, torch.float32, rank)
    set_trainable_adapter(unet, kind)
    batch = make_batch_meta(unet, size)
    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(unet, kind, batch, None).backward()
    return float(counter.get_total_flops())


def make_batch_meta(unet: torch.nn.Module, size: tuple[int, int, int]) -> dict:
    t, h, w = size
    f = LATENT_FACTOR
    meta = torch.device("meta")
    return _batch(torch.empty(1, t, 4, h // f, w // f, device=meta), torch.empty(1, 4, h // f, w // f, device=meta),
                  torch.empty(1, 1, unet.config.cross_attention_dim, device=meta),
                  torch.ones(1, t, 1, h // f, w // f, device=meta))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def bench_one(
    args: argparse.Namespace, unet: torch.nn.Module, model: str, kind: str, size, ckpt: bool, compiled: bool = False
) -> Row:  # noqa: ANN001
    device = torch.device(args.device)
    precision = args.precision
    if ckpt:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    unet.train()
    set_trainable_adapter(unet, kind)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-4, fused=device.type == "cuda")
    batch = make_batch(unet, size, device)
    gen = torch.Generator(device=device).manual_seed(1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    targets = bypass_targets(unet)  # found once, as ReCaptureModule does
    runner = None
    if compiled:
        torch._dynamo.reset()  # every compiled row pays its own compilation
        runner = torch.compile(unet, backend=args.compile_backend)

    def step() -> None:
        with autocast:
            loss = loss_fn(unet, kind, batch, gen, targets, model=runner)
        # backward under the step context too, as ReCaptureModule.backward: with gradient checkpointing
        # the spatial step's recomputation must skip the temporal blocks as its forward did
        with step_context(unet, kind, targets=targets):
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    peak = None
    note = ""
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        compile_s = None
        if compiled:
            start = time.perf_counter()
            step()
            sync(device)
            compile_s = time.perf_counter() - start
        times = time_steps(step, device, max(0, args.warmup - compiled), args.steps)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**30
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, process peak
    except torch.cuda.OutOfMemoryError:
        times, note, compile_s = [], "OOM", None
        opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
    flops = None if args.no_flops else count_flops(model, kind, size, args.rank)
    return Row(kind, size, model, precision, ckpt, times, peak, flops, note, compile_s)


def machine(device: torch.device) -> str:
    import diffusers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        hw = f"{name}, CUDA {torch.version.cuda}"
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        hw = f"{name}, {torch.get_num_threads()} threads"
    return f"{hw}; torch {torch.__version__}, diffusers {diffusers.__version__}, Python {platform.python_version()}"


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[Row], args: argparse.Namespace, header: list[str]) -> str:
    lines = list(header)
    lines += [
        "",
        "| kind | frames x H x W | model | precision | grad ckpt | compiled (1st step s) | step ms (median) "
        "| step ms (min) | peak mem GiB | model TFLOP/step | TFLOP/s | utilisation |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        med = statistics.median(r.times_s) if r.times_s else None
        best = min(r.times_s) if r.times_s else None
        tflop = None if r.flops is None else r.flops / 1e12
        rate = None if (tflop is None or med is None) else tflop / med
        util = None if (rate is None or args.peak_tflops is None) else rate / args.peak_tflops
        size = "x".join(str(v) for v in r.size)
        lines.append(
            f"| {r.kind} | {size} | {r.model} | {r.precision} | {'on' if r.checkpointing else 'off'} "
            f"| {'no' if r.compile_s is None else f'yes ({r.compile_s:.1f})'} "
            f"| {r.note or fmt(None if med is None else med * 1e3, '.1f')} | {fmt(None if best is None else best * 1e3, '.1f')} "
            f"| {fmt(r.peak_gib, '.2f')} | {fmt(tflop, '.3g')} | {fmt(rate, '.3g')} "
            f"| {'-' if util is None else f'{util:.1%}'} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:i]")
    p.add_argument(
        "--model", choices=["auto", "tiny", "full"], default="auto", help="auto: full on CUDA, tiny on CPU"
    )
    p.add_argument(
        "--sizes",
        type=lambda s: [parse_size(v) for v in s.split(",")],
        default=None,
        help="comma-separated TxHxW (default: 14x256x384,14x576x1024 on CUDA; 4x64x64,14x256x384 on CPU)",
    )
    p.add_argument("--kinds", default="temporal,spatial", help="comma-separated: temporal, spatial")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10 CUDA, 3 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 CUDA, 1 CPU)")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank")
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16 autocast or fp32 (auto: bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument(
        "--weights-dtype",
        choices=["fp32", "bf16"],
        default="fp32",
        help="dtype of the frozen base weights (LoRA weights stay fp32)",
    )
    p.add_argument(
        "--grad-checkpointing",
        choices=["off", "on", "both"],
        default=None,
        help="gradient checkpointing (default: both on CUDA, off on CPU)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak TFLOP/s for the utilisation column (e.g. 989 for H100 SXM dense bf16)",
    )
    p.add_argument(
        "--cpu-full-size",
        type=parse_size,
        default=None,
        help="on CPU, also time one full-size UNet step at this size (e.g. 2x64x64)",
    )
    p.add_argument("--compile", choices=["off", "on", "both"], default="off",
                   help="torch.compile the UNet (model.compile_unet): off, on, or both rows")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--out", default=None, help="also write the Markdown table to this file")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    args.model = ("full" if cuda else "tiny") if args.model == "auto" else args.model
    args.sizes = args.sizes or ([(14, 256, 384), (14, 576, 1024)] if cuda else [(4, 64, 64), (14, 256, 384)])
    args.kinds = [k.strip() for k in args.kinds.split(",")]
    bad = [k for k in args.kinds if k not in KINDS]
    if bad:
        p.error(f"unknown kind(s) {bad}; choose from {list(KINDS)}")
    args.steps = args.steps or (10 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.precision = ("bf16" if cuda else "fp32") if args.precision == "auto" else args.precision
    args.grad_checkpointing = args.grad_checkpointing or ("both" if cuda else "off")
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # spurious "kept in float32: []" on Module.to(dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ckpts = {"off": [False], "on": [True], "both": [False, True]}[args.grad_checkpointing]
    weights_dtype = torch.bfloat16 if args.weights_dtype == "bf16" else torch.float32
    plan = [(args.model, size) for size in args.sizes]
    if device.type == "cpu" and args.cpu_full_size is not None:
        plan.append(("full", args.cpu_full_size))
    rows: list[Row] = []
    models: dict[str, torch.nn.Module] = {}
    for model, size in plan:
        if model not in models:
            models.clear()  # one UNet resident at a time
            models[model] = build_unet(model, device, weights_dtype, args.rank)
        unet = models[model]
        compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
        for kind in args.kinds:
            for ckpt in ckpts:
                for compiled in compiles:
                    if model == "full" and device.type == "cpu":
                        saved = (args.steps, args.warmup)
                        args.steps, args.warmup = 1, 0
                    rows.append(bench_one(args, unet, model, kind, size, ckpt, compiled))
                    if model == "full" and device.type == "cpu":
                        args.steps, args.warmup = saved
                    print(f"done: {model} {kind} {size} ckpt={ckpt} compiled={compiled}", file=sys.stderr, flush=True)
    unet = next(iter(models.values()))
    n_params = sum(p.numel() for n, p in unet.named_parameters() if "lora_" not in n)
    processor = type(next(iter(unet.attn_processors.values()))).__name__
    header = [
        "### Fine-tuning step benchmark (`benchmarks/finetune_step.py`)",
        "",
        f"* command: `{shlex.join(['python', 'benchmarks/finetune_step.py', *(sys.argv[1:] if argv is None else argv)])}`",
        f"* machine: {machine(device)}",
        f"* date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"* models: {', '.join(sorted({m for m, _ in plan}))} (last built: {n_params:,} base parameters, random weights), "
        f"LoRA rank {args.rank} on both adapters, base weights {args.weights_dtype}, attention {processor} (SDPA), "
        f"{args.warmup} warm-up + {args.steps} timed steps (full-size on CPU: 1 step)",
        "* temporal: clip, masked loss, temporal LoRA trained, spatial LoRA frozen; spatial: T single frames "
        "under the temporal bypass (temporal compute skipped), spatial LoRA trained. Steps include AdamW.",
        "* peak memory: CUDA max allocated during the timed steps; on CPU the process peak RSS.",
    ]
    text = table(rows, args, header)
    print(text)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
    return text


if __name__ == "__main__":
    main()
