"""The same `domaintune train` under torchrun: two CPU processes (gloo) match one process on the same global batch."""

import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from domaintune import load_config, run_prepare, run_train


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_two_process_ddp_matches_one_process(tiny_overrides, tmp_path):
    # Dropout off and a sequential-in-effect order: both layouts see the same 4 rows per optimizer step.
    common = [*tiny_overrides, "train.max_steps=3", "train.lora.dropout=0", "train.warmup_ratio=0",
              "train.sampling=sequential"]
    cfg = load_config(None, [*common, "train.batch_size=4", f"train.output_dir={tmp_path / 'one'}"])
    run_prepare(cfg)
    single = run_train(cfg)

    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "domaintune", "train",
         *common, "train.batch_size=2", f"train.output_dir={tmp_path / 'two'}"],
        env=env, check=True, capture_output=True, timeout=600,
    )
    one = load_file(single / "adapter" / "adapter_model.safetensors")
    two = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    assert max((one[k] - two[k]).abs().max().item() for k in one) <= 1e-5
