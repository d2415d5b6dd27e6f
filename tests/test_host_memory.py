"""Host memory reuse (``recapture.host_memory``): large CPU tensors from the heap inside the block.

Each case runs in a fresh interpreter: the block changes process-wide glibc settings, and page-fault
counts are only meaningful in a process whose heap this test alone shaped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from recapture.host_memory import host_memory_reuse_available, reused_host_memory

pytestmark = pytest.mark.skipif(not host_memory_reuse_available(), reason="needs Linux with glibc's malloc")

# A chain of 36 MiB tensors, each above glibc's largest mmap threshold (32 MiB): without reuse each
# of the 13 allocations is a fresh mapping, 9216 pages to fault in.
_PAGES_PER_CHAIN = 13 * (9 << 22) // 4096
_PROBE = """
import ctypes, json, resource, sys, torch
from recapture.host_memory import reused_host_memory

def faults(rounds=4):
    counts = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.ones(9 << 20)
        for _ in range(4):
            x = torch.nn.functional.gelu(x * 2 + 1)
        del x
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sum(counts[1:]) / (rounds - 1)  # per chain, after the first

_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
_libc = ctypes.CDLL("libc.so.6")
try:  # glibc >= 2.33
    _libc.mallinfo2.restype = type("mallinfo2", (ctypes.Structure,), {"_fields_": [(f, ctypes.c_size_t) for f in _FIELDS]})
except AttributeError:
    _libc.mallinfo2 = _libc.mallinfo
    _libc.mallinfo2.restype = type("mallinfo", (ctypes.Structure,), {"_fields_": [(f, ctypes.c_int) for f in _FIELDS]})

def fresh_mapping():  # whether a block larger than the whole heap (no free chunk fits it) gets its own mmap
    before = _libc.mallinfo2()
    x = torch.empty(before.arena // 4 + (16 << 20))  # no page is touched
    mapped = _libc.mallinfo2().hblks > before.hblks
    del x
    return mapped

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

result = {"outside": faults(), "mapped_outside": fresh_mapping()}
with reused_host_memory() as outer:
    with reused_host_memory() as inner:
        result["nested"] = faults()
    result["inside"] = faults()
    result["mapped_inside"] = fresh_mapping()
    result["rss_in_block"] = rss_mib()
result["rss_after"] = rss_mib()
result["outer"], result["inner"] = outer, inner
# blocks that overlap without nesting (two threads): the last to leave restores
first, second = reused_host_memory(), reused_host_memory()
first.__enter__(), second.__enter__()
first.__exit__(None, None, None)
result["overlap"] = faults()
result["mapped_overlap"] = fresh_mapping()
second.__exit__(None, None, None)
result["mapped_after"] = fresh_mapping()
print(json.dumps(result))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PROBE)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_large_tensors_reuse_mapped_pages_inside_the_block_only():
    r = _probe()
    assert r["outer"] is True and r["inner"] is False  # the nested block leaves the outer settings
    assert r["outside"] > 0.9 * _PAGES_PER_CHAIN  # the control: fresh mappings, every page faulted in
    # freed blocks' pages handed on, already mapped (measured: at most one tensor's pages per chain)
    assert r["nested"] < 0.2 * _PAGES_PER_CHAIN and r["inside"] < 0.2 * _PAGES_PER_CHAIN
    assert r["rss_after"] < r["rss_in_block"] - 100  # the free heap went back to the system on exit
    assert r["overlap"] < 0.2 * _PAGES_PER_CHAIN  # the first block left, the second still reuses
    # glibc's own rule is back once the last block has left: a block too large for any free chunk of
    # the heap is mapped afresh, as outside (inside, the heap grows instead). Page faults cannot show
    # this: after the block the heap may keep free chunks that glibc rightly hands on (torch 2.11).
    assert (r["mapped_outside"], r["mapped_inside"], r["mapped_overlap"], r["mapped_after"]) == (True, False, False, True)


@pytest.mark.parametrize(
    "env",
    [{"MALLOC_MMAP_MAX_": "65536"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}],
    ids=["MALLOC_MMAP_MAX_", "GLIBC_TUNABLES"],
)
def test_a_users_own_malloc_settings_are_left_alone(env):
    r = _probe(**env)
    assert r["outer"] is False and r["inner"] is False
    assert r["inside"] > 0.9 * _PAGES_PER_CHAIN


def test_disabled_changes_nothing():
    with reused_host_memory(False) as changed:
        assert changed is False
