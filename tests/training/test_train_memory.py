"""Training memory: the peak-RSS sampler and the allocator setting (recomputation: test_memory_plan.py)."""

from __future__ import annotations

import mmap
import resource
import subprocess
import sys
import time

import pytest

from domaintune.core.runtime import PeakRss

MIB = 1 << 20


def _resident_block(size: int) -> mmap.mmap:
    """An anonymous mapping, touched: malloc could serve a block from pages an earlier test freed but kept."""
    block = mmap.mmap(-1, size)
    block.write(b"x" * size)
    return block


def test_peak_rss_is_this_blocks_peak_not_the_processes():
    _resident_block(768 * MIB).close()  # an earlier, bigger run in the same process
    with PeakRss(interval=0.01) as memory:
        block = _resident_block(192 * MIB)
        time.sleep(0.2)
        block.close()
    grown = memory.peak - memory.before
    assert 150 * MIB < grown < 400 * MIB
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert lifetime_peak > memory.peak + 300 * MIB  # what ru_maxrss would have charged to the block


FRAGMENT = """
import sys, psutil, torch
from domaintune.core.runtime import return_freed_memory_at_once
if sys.argv[1] in ("set", "set-then-keep"):
    assert return_freed_memory_at_once()
if sys.argv[1] == "set-then-keep":  # a lean run, then a run chosen for speed, in one process
    assert return_freed_memory_at_once(False)
rss = lambda: psutil.Process().memory_info().rss
first = torch.ones(1 << 20); del first  # glibc raises its mmap threshold to this 4 MiB block
start = rss()
blocks = [torch.ones(1 << 20) for _ in range(100)]
kept = blocks[1::2]; del blocks  # every other block freed, as activations are between live ones
print((rss() - start) >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_tensors_leave_rss_at_once():
    grown = {}
    for mode in ("default", "set", "set-then-keep"):
        out = subprocess.run([sys.executable, "-c", FRAGMENT, mode], capture_output=True, text=True, check=True)
        grown[mode] = int(out.stdout.split()[-1])
    assert grown["default"] > 350  # 200 MiB live, the freed 200 MiB still resident
    assert grown["set"] < 260
    assert grown["set-then-keep"] > 350

