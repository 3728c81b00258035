"""The memory a run may plan with: available RAM or what a cgroup limit leaves, whichever is lower, shared
among the processes of a launch on one machine, plus what this process already holds."""

from types import SimpleNamespace

import psutil
import pytest
import torch

from domaintune.core import runtime

GIB = 1 << 30


@pytest.fixture
def cpu_with_8_gib_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=8 * GIB))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    return psutil.Process().memory_info().rss  # what the process holds (grows little during a test)


def test_available_ram_counts_without_a_cgroup_limit(monkeypatch, cpu_with_8_gib_available):
    monkeypatch.setattr(runtime, "_cgroup_memory_left", lambda: None)
    assert runtime.memory_budget() == pytest.approx(8 * GIB + cpu_with_8_gib_available, abs=64 << 20)


def test_a_lower_cgroup_limit_wins(monkeypatch, cpu_with_8_gib_available):
    monkeypatch.setattr(runtime, "_cgroup_memory_left", lambda: 3 * GIB)
    assert runtime.memory_budget() == pytest.approx(3 * GIB + cpu_with_8_gib_available, abs=64 << 20)


def test_processes_of_one_launch_share_the_machine(monkeypatch, cpu_with_8_gib_available):
    monkeypatch.setattr(runtime, "_cgroup_memory_left", lambda: None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert runtime.memory_budget() == pytest.approx(2 * GIB + cpu_with_8_gib_available, abs=64 << 20)
