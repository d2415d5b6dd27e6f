"""bf16 on a CPU without bf16 instructions: fall back to float32 with one warning.

On a CPU without AVX512-BF16 or AMX, PyTorch emulates bfloat16: a 3x3 convolution of SVD's size ran
~400x slower and a linear layer ~7x slower than in float32 on a 2-core AMD EPYC (``benchmarks/README.md``,
"bf16 on a CPU"; ``python benchmarks/cpu_bf16.py``).
``configs/orbit.yaml`` asks for ``bf16-mixed`` (right on a GPU), so on such a CPU a run that should
take minutes takes hours. The Lightning commands therefore run in ``32-true`` there, and say so.
``RECAPTURE_CPU_BF16=1`` keeps bf16 anyway (to reproduce a bf16 run bit for bit, slowly).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

log = logging.getLogger("recapture")

KEEP_ENV = "RECAPTURE_CPU_BF16"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), so bf16 is not emulated."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether a trainer with this ``accelerator`` setting runs on the CPU on this machine."""
    name = str(accelerator if accelerator is not None else "auto").lower()
    if name == "cpu":
        return True
    if name != "auto":
        return False
    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


def cpu_precision(trainer: Any) -> str | None:
    """Replace a bf16 ``trainer.precision`` by ``32-true`` on a CPU that would emulate bf16.

    Args:
        trainer: the parsed ``trainer:`` section (a jsonargparse Namespace or a dict), changed in place.

    Returns:
        The precision that was replaced, or None when nothing changed.
    """
    precision = str(trainer.get("precision") or "")
    if not precision.startswith("bf16") or not runs_on_cpu(trainer.get("accelerator", "auto")):
        return None
    if os.environ.get(KEEP_ENV) == "1" or cpu_has_fast_bf16():
        return None
    trainer["precision"] = "32-true"
    log.warning(
        "trainer.precision %s: this CPU has no bfloat16 instructions (AVX512-BF16/AMX), so bf16 convolutions "
        "run hundreds of times slower than float32; running in 32-true instead (pass --trainer.precision 32-true to "
        "silence this, or set %s=1 to keep bf16)", precision, KEEP_ENV,
    )
    return precision
