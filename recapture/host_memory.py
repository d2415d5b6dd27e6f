"""Host memory reuse for CPU compute: large tensors from the process heap instead of fresh pages.

glibc's ``malloc`` serves every request above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it on ``free``. A CPU activation of SVD's UNet or VAE decoder is often larger
(one 14x256x384 CFG feed-forward output: 44 MB; a decoder activation: hundreds of MB), so each one
is a new mapping whose pages the kernel faults in and zeroes on first touch, every step, and the
next one again. On a 2-core machine that was a fifth of a sampling call's CPU time
(``benchmarks/README.md``, "Sampling": 13.2 s of system time in a 14x256x384 video at 2 threads,
0.7 s with reuse, and the decode twice as fast).

:func:`reused_host_memory` makes glibc take such blocks from the heap for the duration of a block
(``mallopt(M_MMAP_MAX, 0)``, and no trimming of the heap's top), so a freed activation's pages are
handed to the next one already mapped. On exit the free memory goes back to the system
(``malloc_trim``) and glibc's allocation thresholds are left where its own dynamic rule takes them
after a process's first 32 MiB tensor: mmap above 32 MiB, trim beyond 64 MiB. The process's peak
memory grows by what heap fragmentation keeps (a 14x256x384 tiny-model video at 2 threads: 1.43 ->
1.92 GiB peak RSS), for the block only.

It changes nothing where it cannot apply or should not: outside Linux/glibc, when glibc's malloc
was configured by the user (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or ``GLIBC_TUNABLES``) or replaced (jemalloc or
tcmalloc in ``LD_PRELOAD``); nested or concurrent blocks share one change, undone by the last to leave.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import sys
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

__all__ = ["reused_host_memory", "host_memory_reuse_available"]

# glibc's mallopt parameters (malloc.h) and the values its dynamic rule reaches
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DYNAMIC_MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_DYNAMIC_TRIM_THRESHOLD = 2 * _DYNAMIC_MMAP_THRESHOLD
_NO_TRIM = (1 << 31) - 1  # an int: mallopt takes a C int

_USER_SETTINGS = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "GLIBC_TUNABLES",
)
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    """glibc, when this process allocates through it and nobody configured it; else None."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    if any(name in os.environ for name in _USER_SETTINGS):
        return None
    if any(name in os.environ.get("LD_PRELOAD", "") for name in _OTHER_ALLOCATORS):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def host_memory_reuse_available() -> bool:
    """Whether :func:`reused_host_memory` changes anything in this process."""
    return _glibc() is not None


@contextlib.contextmanager
def reused_host_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside the block, glibc serves large allocations from the heap and keeps freed pages mapped.

    Blocks may nest or overlap across threads: the first to enter changes the settings, the last to
    leave restores them.

    Yields:
        whether this block changed the allocator (False when disabled, not applicable, or already
        changed by an enclosing or concurrent block).
    """
    global _depth
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        first = _depth == 1
        if first and not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)):
            log.debug("mallopt refused the host memory settings; allocating as before")
    try:
        yield first
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_MMAP_THRESHOLD, _DYNAMIC_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _DYNAMIC_TRIM_THRESHOLD)
                libc.malloc_trim(0)
