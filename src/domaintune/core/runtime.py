"""Hardware facts and choices: device, precision, threads, memory, library versions."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import psutil
import torch

from domaintune.core.errors import warn


def device_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels (AVX512-BF16 or AMX).

    Without them bf16 matmuls are emulated: on an AVX2-only EPYC we measured bf16 at 1.4 GFLOP/s
    against 104 GFLOP/s for fp32, and a bf16-autocast training step 25x slower than fp32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(setting: str) -> str:
    """Map `auto|bf16|fp32` to what this machine will actually run: `bf16`, `fp16` or `fp32`."""
    if setting == "bf16" and not torch.cuda.is_available() and not cpu_has_fast_bf16():
        warn("train.precision=bf16 on a CPU without native bf16 kernels (AVX512-BF16/AMX): bf16 matmuls are "
             "emulated, many times slower than fp32; use train.precision=auto or fp32; "
             "see docs/troubleshooting.md#slow-cpu-training")
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def mfu_peak_precision(run_precision: str) -> str:
    """The matmul precision whose peak a run's model FLOPs utilisation is measured against: the run's own where
    the hardware runs it natively (bf16 on AVX512-BF16/AMX CPUs, bf16 or fp16 on a GPU), else fp32. A bf16 run
    on a CPU that emulates bf16 is held to the fp32 peak, the fastest this machine can multiply: against the
    emulated bf16 peak (1.4 GFLOP/s on an AVX2-only EPYC) the slow choice would look efficient."""
    if run_precision == "fp32":
        return "fp32"
    if torch.cuda.is_available():
        return run_precision
    return "bf16" if run_precision == "bf16" and cpu_has_fast_bf16() else "fp32"


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
RETURN_AT_ONCE, KEEP_FOR_REUSE = 1 << 16, 32 << 20  # 32 MiB: where glibc's own adjustment stops


def return_freed_memory_at_once(enabled: bool = True) -> bool:
    """Choose how glibc treats a CPU step's freed activation tensors: give them back, or keep them.

    By default glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB),
    so from the first step on activations come from its heap, and the ones freed between live ones stay
    resident: a LoRA step's RSS ran about 2 GiB above its live tensors (bench/lora_memory.py). With
    `enabled`, every block of 64 KiB or more gets its own mapping, unmapped when freed; the price is a
    page fault for every page of every new tensor, which made a LoRA step about 1.6x slower here. So it
    goes with recomputation (the memory-lean setting) and is off (32 MiB, glibc's steady state) for
    runs chosen for speed. Set both ways because it is process-wide and a later run may want the other;
    False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, RETURN_AT_ONCE if enabled else KEEP_FOR_REUSE))
    except (OSError, AttributeError):
        return False


_allocator_choice: bool | None = None  # what this process last chose: glibc has no getter for the threshold


@contextmanager
def freed_memory_policy(return_at_once: bool | None) -> Iterator[None]:
    """`return_freed_memory_at_once(return_at_once)` inside the block (None: leave the allocator alone), then
    the choice made before. The setting is process-wide by nature (one malloc per process), so a stage
    that needs it sets it for its run only; where nothing was chosen before, it goes back to
    KEEP_FOR_REUSE, the threshold glibc itself settles at (glibc cannot be returned to its dynamic mode)."""
    global _allocator_choice
    if return_at_once is None:
        yield
        return
    before = _allocator_choice
    return_freed_memory_at_once(return_at_once)
    _allocator_choice = return_at_once
    try:
        yield
    finally:
        return_freed_memory_at_once(bool(before))
        _allocator_choice = before


def memory_budget() -> int:
    """Bytes a run in this process may use: on CUDA the device's free memory; on a CPU the available RAM
    (psutil: free plus reclaimable cache) or what the cgroup limit leaves, whichever is lower, shared with the
    other processes of a torchrun launch on this machine (LOCAL_WORLD_SIZE), plus what this process already
    holds (a memory plan counts the imports in its estimate)."""
    if torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0]) + int(torch.cuda.memory_reserved())
    available = psutil.virtual_memory().available
    left_by_cgroup = _cgroup_memory_left()
    if left_by_cgroup is not None:
        available = min(available, left_by_cgroup)
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return int(available) // max(processes_here, 1) + psutil.Process().memory_info().rss


def _cgroup_memory_left() -> int | None:
    """The least room (limit minus usage) that this process's memory cgroup or one above it leaves; None
    without a limit. cgroup v2 (`0::/path`: memory.max) and v1 (`N:memory:/path`: memory.limit_in_bytes)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    groups = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            groups += [(Path("/sys/fs/cgroup", path.lstrip("/")), "memory.max", "memory.current")]
        elif "memory" in controllers.split(","):
            groups += [(Path("/sys/fs/cgroup/memory", path.lstrip("/")), "memory.limit_in_bytes",
                        "memory.usage_in_bytes")]
    room = []
    for folder, limit_file, usage_file in groups:
        for level in (folder, *folder.parents):
            try:
                limit = (level / limit_file).read_text().strip()
                usage = int((level / usage_file).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit != "max" and int(limit) < 1 << 60:  # v1 writes "no limit" as a huge number
                room.append(max(int(limit) - usage, 0))
    return min(room) if room else None


class PeakRss:
    """Peak resident memory of this process while a `with` block runs, sampled by a thread every `interval` s.

    Not `ru_maxrss`: that is the process's lifetime peak, so an earlier run in the same process (demo
    --compare, a sweep, a test session) would be charged to every later one. torch releases the GIL in
    its kernels, so the sampler keeps running during a step; a spike shorter than `interval` can be missed.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.before = self.peak = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.before = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._process.memory_info().rss)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in ("domaintune", "torch", "transformers", "peft", "trl", "accelerate", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def hardware() -> dict[str, object]:
    info: dict[str, object] = {
        "device": device_name(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
