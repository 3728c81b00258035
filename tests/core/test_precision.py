"""`train.precision: auto`, and the peak MFU is measured against, follow the hardware: the CPU's bf16 kernels
are mocked, so both answers are checked on every machine (AVX2-only CPUs emulate bf16, AVX512-BF16/AMX CPUs
run it natively)."""

import pytest
import torch

from domaintune.core import runtime


class _Answer:
    def __init__(self, value):
        self.value = value

    def __call__(self):
        return self.value


@pytest.mark.parametrize("native_bf16, expected", [(False, "fp32"), (True, "bf16")])
def test_auto_on_a_cpu_picks_bf16_only_with_native_kernels(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # The capability oneDNN reports, not our wrapper: cpu_has_fast_bf16 is part of what is tested.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", _Answer(native_bf16))
    assert runtime.cpu_has_fast_bf16() is native_bf16
    assert runtime.resolve_precision("auto") == expected
    assert runtime.resolve_precision("fp32") == "fp32"


def test_a_cpu_whose_torch_cannot_tell_counts_as_without_bf16(monkeypatch):
    def unknown():
        raise RuntimeError("mkldnn not built")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", unknown)
    assert runtime.resolve_precision("auto") == "fp32"


@pytest.mark.parametrize("gpu_bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu_picks_bf16_or_fp16(monkeypatch, gpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
    assert runtime.resolve_precision("auto") == expected


@pytest.mark.parametrize("native_bf16, run, expected", [
    (True, "bf16", "bf16"),   # AVX512-BF16/AMX: a bf16 run is held to the bf16 peak
    (False, "bf16", "fp32"),  # emulated bf16: to the fp32 peak, this CPU's fastest, not the emulated one
    (True, "fp32", "fp32"),
    (False, "fp32", "fp32"),
])
def test_mfu_is_measured_against_the_peak_of_the_precision_the_cpu_runs(monkeypatch, native_bf16, run, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", _Answer(native_bf16))
    assert runtime.mfu_peak_precision(run) == expected
    assert runtime.mfu_peak_precision(runtime.resolve_precision("auto")) == ("bf16" if native_bf16 else "fp32")


@pytest.mark.parametrize("run", ["bf16", "fp16", "fp32"])
def test_mfu_on_a_gpu_is_measured_against_the_runs_own_precision(monkeypatch, run):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", _Answer(False))  # the host CPU plays no part
    assert runtime.mfu_peak_precision(run) == run
