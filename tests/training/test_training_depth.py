"""Training methods, checkpoints and resume, monitoring: issue-6 behaviour on the tiny model."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import kill_cli_after_checkpoint
from domaintune import load_config, run_prepare, run_train
from domaintune.core.errors import DomaintuneError
from domaintune.training.checkpoints import MARKER, complete_checkpoints
from exactness import StepRecorder


def _prepared(overrides, *extra):
    cfg = load_config(None, list(overrides) + list(extra))
    run_prepare(cfg)
    return cfg


def _card(run_dir):
    return json.loads((Path(run_dir) / "run_card.json").read_text())


def test_dora_trains_an_adapter(tiny_overrides):
    run_dir = run_train(_prepared(tiny_overrides, "train.method=dora"))
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is True and _card(run_dir)["method"] == "dora"


def test_freeze_trains_only_the_top_blocks(tiny_overrides, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    run_dir = run_train(_prepared(tiny_overrides, "train.method=freeze", "train.freeze_top_layers=1"))
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = load_file(run_dir / "model" / "model.safetensors")
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith(("model.layers.1.", "model.norm")) for k in changed)
    card = _card(run_dir)
    assert 0 < card["trainable_parameters"] < card["total_parameters"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a CUDA GPU qlora runs, so there is no CPU error to see")
def test_qlora_on_cpu_stops_before_loading(tiny_overrides, monkeypatch):
    import domaintune.training.train as train_module

    cfg = _prepared(tiny_overrides, "train.method=qlora")
    monkeypatch.setattr(train_module, "resolve_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(DomaintuneError, match="qlora needs a CUDA GPU") as raised:
        run_train(cfg)
    assert "\n" not in str(raised.value), "a user error is one line"


def test_non_finite_loss_stops_with_step(tiny_overrides, tmp_path):
    cfg = _prepared(tiny_overrides, "train.learning_rate=1e12", "train.max_steps=12", "train.lora.dropout=0")
    with pytest.raises(DomaintuneError, match=r"training loss became (nan|inf) at step \d+: lower train.learning_rate"):
        run_train(cfg)
    assert not (tmp_path / "runs" / "lora").exists()


def test_eval_steps_and_best_checkpoint(tiny_overrides):
    run_dir = run_train(_prepared(tiny_overrides, "train.max_steps=4", "train.eval_steps=2", "train.save_steps=2"))
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if "eval_loss" in r][:2] == [2, 4]
    assert _card(run_dir)["best_checkpoint_step"] in (2, 4)
    assert not (run_dir / "checkpoints").exists(), "checkpoints are dropped once the run is complete"


@pytest.mark.parametrize("bad, message", [
    (["train.early_stopping_patience=2"], "needs train.eval_steps"),
    (["train.eval_steps=3", "train.save_steps=4"], "multiple of train.eval_steps"),
    (["train.save_total_limit=1"], "train.save_total_limit"),
])
def test_schedule_validation(bad, message):
    with pytest.raises(DomaintuneError, match=message):
        load_config(None, bad)


def test_resume_without_checkpoint_is_explained(tiny_overrides):
    cfg = _prepared(tiny_overrides)
    with pytest.raises(DomaintuneError, match="nothing to resume"):
        run_train(cfg, resume=True)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sigkill_then_resume_matches_uninterrupted_run(tiny_overrides, tmp_path, precision):
    common = ["train.max_steps=12", "train.save_steps=4", "train.lora.dropout=0.1", "train.logging_steps=2",
              f"train.precision={precision}"]
    reference = run_train(_prepared(tiny_overrides, *common, f"train.output_dir={tmp_path / 'straight'}"))

    killed_dir = tmp_path / "killed"
    args = [*tiny_overrides, *common, f"train.output_dir={killed_dir}"]
    checkpoints = kill_cli_after_checkpoint(args, killed_dir, step=4, seconds_per_step=0.1)

    # A kill during a save leaves a later checkpoint without its marker: a copy of the last complete one,
    # one file cut short. Resuming from it would load a broken optimizer state or skip steps.
    last = max(complete_checkpoints(checkpoints), key=lambda p: int(p.name.split("-")[1]))
    half_written = checkpoints / "checkpoint-11"
    shutil.copytree(last, half_written)
    (half_written / MARKER).unlink()
    (half_written / "optimizer.pt").write_bytes((half_written / "optimizer.pt").read_bytes()[:100])

    counter = StepRecorder(tmp_path / "resumed-grads")
    resumed = run_train(load_config(None, args), resume=True, callbacks=[counter])
    resumed_from = _card(resumed)["resumed_from_step"]
    assert resumed_from == int(last.name.split("-")[1]) >= 4
    # Training is deterministic, so equal weights alone cannot tell a resume from a silent restart.
    assert counter.steps_run == 12 - resumed_from, "the resumed process must run only the remaining steps"
    want = load_file(reference / "adapter" / "adapter_model.safetensors")
    got = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    # Resuming restores the fp32 master weights, the optimizer state and the RNG exactly, and the remaining
    # steps run the same kernels on the same shapes, so the result is bitwise equal in either precision
    # (autocast only changes what a matmul computes, not whether it is repeatable).
    assert all(torch.equal(want[k], got[k]) for k in want)
