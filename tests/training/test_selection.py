"""train.select_by: val accuracy / macro-F1 during training pick the best checkpoint and drive early stopping."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from domaintune import load_config, run_prepare, run_train
from domaintune.core.errors import DomaintuneError
from domaintune.data.prepare import read_split
from domaintune.evaluation.metrics import classification_metrics
from domaintune.training import train as train_module


def _prepared(tiny_overrides, *extra):
    cfg = load_config(None, [*tiny_overrides, *extra])
    run_prepare(cfg)
    return cfg


def _card(run_dir):
    return json.loads((run_dir / "run_card.json").read_text())


def _evaluations(run_dir) -> list[dict]:
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in history if "eval_loss" in r]


class AdapterAtEvaluation(TrainerCallback):
    """The trainable weights at each step's first evaluation (the closing one repeats the last step)."""

    def __init__(self):
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.weights.setdefault(state.global_step, {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad})


def _scripted_predictions(monkeypatch, gold: list[str], best_call: int) -> list[int]:
    """Replace val scoring: all rows right at evaluation `best_call` (1-based), all 'positive' at the
    others, so macro-F1 peaks exactly there whatever the weights do. Returns the list of calls made."""
    calls: list[int] = []

    def factory(*args, **kwargs):
        def predict(model):
            calls.append(len(calls) + 1)
            return list(gold) if len(calls) == best_call else ["positive"] * len(gold)
        return predict

    monkeypatch.setattr(train_module, "val_predictor", factory)
    return calls


SCHEDULE = ["train.max_steps=6", "train.eval_steps=2", "train.save_steps=2", "train.save_total_limit=3",
            "train.learning_rate=0.005", "train.lora.dropout=0"]


def test_select_by_macro_f1_keeps_a_checkpoint_val_loss_would_not(tiny_overrides, tmp_path, monkeypatch):
    by_loss = run_train(_prepared(tiny_overrides, *SCHEDULE, f"train.output_dir={tmp_path / 'by_loss'}"))
    losses = {r["step"]: r["eval_loss"] for r in _evaluations(by_loss)[:3]}
    assert list(losses) == [2, 4, 6] and len(set(losses.values())) == 3
    assert _card(by_loss)["best_checkpoint_step"] == min(losses, key=losses.get)
    # The same run (same seed, same steps) with macro-F1 best where val loss is worst: the two rules disagree.
    worst = max(losses, key=losses.get)
    cfg = _prepared(tiny_overrides, *SCHEDULE, "train.select_by=val_macro_f1", f"train.output_dir={tmp_path / 'f1'}")
    gold = [r["label"] for r in read_split(cfg.data.output_dir, "val")]
    calls = _scripted_predictions(monkeypatch, gold, best_call=worst // 2)
    seen = AdapterAtEvaluation()
    run_dir = run_train(cfg, callbacks=[seen])

    evaluations = _evaluations(run_dir)
    assert [r["eval_loss"] for r in evaluations[:3]] == list(losses.values()), "the same trajectory"
    assert [r["eval_macro_f1"] for r in evaluations[:3]] == [
        1.0 if r["step"] == worst else classification_metrics(gold, ["positive"] * len(gold),
                                                              ["negative", "neutral", "positive"])["macro_f1"]
        for r in evaluations[:3]]
    card = _card(run_dir)
    assert (card["select_by"], card["best_val_value"], card["best_val_step"]) == ("val_macro_f1", 1.0, worst)
    assert card["best_checkpoint_step"] == worst != _card(by_loss)["best_checkpoint_step"]
    # The closing evaluation scores the restored weights: the scripted 4th call says 'positive' everywhere.
    assert len(calls) == 4 and card["val_macro_f1"] == evaluations[-1]["eval_macro_f1"]
    saved = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    # peft saves `...lora_A.weight` for the model's `...lora_A.default.weight` (the adapter's name dropped).
    expected = {name.replace(".default", ""): weight for name, weight in seen.weights[worst].items()}
    assert saved.keys() == expected.keys()
    for name, weight in saved.items():
        assert torch.equal(weight, expected[name]), name  # float32 weights, saved bit for bit


def test_early_stopping_follows_select_by(tiny_overrides, tmp_path, monkeypatch):
    cfg = _prepared(tiny_overrides, "train.max_steps=12", "train.eval_steps=2", "train.select_by=val_accuracy",
                    "train.early_stopping_patience=1")
    gold = [r["label"] for r in read_split(cfg.data.output_dir, "val")]
    _scripted_predictions(monkeypatch, gold, best_call=1)  # best at the first evaluation, worse after
    run_dir = run_train(cfg)
    assert _card(run_dir)["steps"] == 4, "one evaluation without a better val accuracy, then stop"


def test_label_metrics_recorded_without_selection(tiny_overrides, tmp_path):
    run_dir = run_train(_prepared(tiny_overrides, "train.max_steps=2"))
    card = _card(run_dir)
    assert card["select_by"] == "val_loss" and card["best_val_value"] is None
    assert 0 <= card["val_accuracy"] <= 1 and 0 <= card["val_macro_f1"] <= 1


@pytest.mark.parametrize("bad, message", [
    (["train.select_by=val_macro_f1"], "needs train.eval_steps"),
    (["train.select_by=val_accuracy", "train.eval_steps=2", "train.task=causal-lm"], "needs task sft or"),
    (["train.class_weights=balanced"], "applies to task=classification"),
    (["train.balanced_sampler=true", "train.task=classification"], "applies to task=sft"),
    (["train.balanced_sampler=true", "train.packing=true"], "set train.packing=false"),
])
def test_selection_and_balance_validation(bad, message):
    with pytest.raises(DomaintuneError, match=message):
        load_config(None, bad)


def test_label_selection_needs_labelled_data(tiny_overrides, tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"say {i}", "output": f"{i}"}) + "\n" for i in range(30)))
    cfg = _prepared(tiny_overrides, f"data.source={path}", "data.format=instruction", "train.eval_steps=2",
                    "train.select_by=val_macro_f1")
    with pytest.raises(DomaintuneError, match="select_by=val_macro_f1 needs labelled data"):
        run_train(cfg)
