"""Where this process stands in a multi-process launch (torchrun, SLURM, a process group, or alone).

The benchmark needs no process group: rank ``r`` of ``world`` takes ``scenes[r::world]``, pins
itself to GPU ``local_rank`` and coordinates with the other ranks through the result files only
(:func:`wait_for_scenes`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from recapture.utils import RecaptureError

__all__ = ["DistInfo", "dist_info", "scene_device", "shard", "wait_for_scenes"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the launch: ``rank`` of ``world_size``, GPU ``local_rank``, and the launcher."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "single"


def _env_int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    value = env.get(key)
    if value is None:
        if default is None:
            raise RecaptureError(f"environment variable {key} is missing")
        return default
    try:
        return int(value)
    except ValueError as err:
        raise RecaptureError(f"environment variable {key}={value!r} must be an integer") from err


def dist_info(env: Mapping[str, str] | None = None) -> DistInfo:
    """Rank, world size and local rank of this process.

    Order: an initialised ``torch.distributed`` process group; torchrun's ``RANK``/``WORLD_SIZE``
    (``LOCAL_RANK`` for the GPU); SLURM's ``SLURM_PROCID``/``SLURM_NTASKS`` (``SLURM_LOCALID``);
    otherwise a single process.
    """
    env = os.environ if env is None else env
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = DistInfo(rank, world, _env_int(env, "LOCAL_RANK", 0), "torch.distributed")
    elif "RANK" in env and "WORLD_SIZE" in env:
        info = DistInfo(_env_int(env, "RANK"), _env_int(env, "WORLD_SIZE"), _env_int(env, "LOCAL_RANK", 0), "torchrun")
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        info = DistInfo(
            _env_int(env, "SLURM_PROCID"), _env_int(env, "SLURM_NTASKS"), _env_int(env, "SLURM_LOCALID", 0), "slurm"
        )
    else:
        info = DistInfo()
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise RecaptureError(
            f"inconsistent launch: rank={info.rank}, world_size={info.world_size}, local_rank={info.local_rank} "
            f"({info.launcher}); check RANK/WORLD_SIZE/LOCAL_RANK or the SLURM task variables"
        )
    return info


def shard(scene_ids: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The scenes rank ``rank`` evaluates: ``scene_ids[rank::world_size]``."""
    return list(scene_ids)[rank::world_size]


def scene_device(local_rank: int) -> torch.device:
    """``cuda:<local_rank>`` (modulo the visible GPUs) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def wait_for_scenes(out: Path, scene_ids: Sequence[str], timeout_s: float, poll_s: float = 2.0) -> list[str]:
    """Wait until every scene JSON exists or ``timeout_s`` passes; return the missing scenes."""
    deadline = time.monotonic() + timeout_s
    announced = False
    while True:
        missing = [s for s in scene_ids if not (out / "scenes" / f"{s}.json").is_file()]
        if not missing or time.monotonic() >= deadline:
            return missing
        if not announced:
            print(f"[rank 0] waiting up to {timeout_s:.0f} s for {len(missing)} scene(s) from other ranks", flush=True)
            announced = True
        time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.0)))
