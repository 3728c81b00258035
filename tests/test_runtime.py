"""Hardware facts: the training peak-memory sampler."""

from __future__ import annotations

import resource
import time

import torch

from domaintune.runtime import PeakRss

MIB = 1 << 20


def test_peak_rss_is_this_blocks_peak_not_the_processes():
    big = torch.ones(768 * MIB // 4)  # an earlier, bigger run in the same process
    del big
    with PeakRss(interval=0.01) as memory:
        block = torch.ones(192 * MIB // 4)
        time.sleep(0.2)
        del block
    grown = memory.peak - memory.before
    assert 150 * MIB < grown < 400 * MIB
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert lifetime_peak > memory.peak + 300 * MIB  # what ru_maxrss would have charged to the block
