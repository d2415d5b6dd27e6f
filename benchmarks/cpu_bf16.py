"""bf16 against float32 on this CPU: why ``recapture`` runs bf16 configs in 32-true on some CPUs.

    python benchmarks/cpu_bf16.py            # SVD-like layers: 3x3 conv 320 ch at 64x64, linear 1280
    python benchmarks/cpu_bf16.py --repeats 5

Each layer runs in float32, under ``torch.autocast("cpu", bfloat16)`` (what ``bf16-mixed`` does) and
with bfloat16 weights and inputs; the median milliseconds and the slow-down against float32 are
printed as a Markdown table, with whether the CPU has bfloat16 instructions (AVX512-BF16 / AMX).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch

from recapture.training.precision import cpu_has_fast_bf16


def _median_ms(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _row(name: str, layer: torch.nn.Module, x: torch.Tensor, repeats: int) -> str:
    def autocast() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x)

    with torch.no_grad():
        fp32 = _median_ms(lambda: layer(x), repeats)
        mixed = _median_ms(autocast, repeats)
        half, xh = layer.to(torch.bfloat16), x.to(torch.bfloat16)  # in place: the last use of the layer
        weights = _median_ms(lambda: half(xh), repeats)
    return f"| {name} | {fp32:.1f} | {mixed:.1f} | {mixed / fp32:.1f} | {weights:.1f} | {weights / fp32:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    layers = {
        "conv 3x3, 320 ch, 1x320x64x64": (torch.nn.Conv2d(320, 320, 3, padding=1), torch.randn(1, 320, 64, 64)),
        "linear 1280->1280, 4096 tokens": (torch.nn.Linear(1280, 1280), torch.randn(4096, 1280)),
    }
    print(f"{datetime.date.today()} | {platform.processor() or platform.machine()} | torch {torch.__version__} | "
          f"{torch.get_num_threads()} threads | bf16 instructions: {cpu_has_fast_bf16()}\n")
    print("| layer | float32 ms | bf16 autocast ms | x float32 | bf16 weights ms | x float32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (layer, x) in layers.items():
        print(_row(name, layer, x, args.repeats))


if __name__ == "__main__":
    main()
