"""A sweep ranks, prunes and reports by `train.select_by`: val macro-F1 maximized, val loss kept beside it.

Val scoring is scripted (as tests/training/test_selection.py does) by the trial's learning rate, so which
trial has the best macro-F1 is fixed whatever the tiny model's weights do.
"""

import csv
import json
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import tiny_overrides_at
from domaintune import load_config, run_sweep
from domaintune.core.errors import DomaintuneError
from domaintune.evaluation.metrics import classification_metrics
from domaintune.training import train as train_module
from domaintune.workflows.sweep import STUDY_NAME
from domaintune.workflows.sweep_objective import check_same_objective, objective_of

FAST = ["train.max_steps=2", "train.eval_steps=1", "train.warmup_ratio=0", "train.logging_steps=1",
        "train.select_by=val_macro_f1"]
RATES = [0.05, 1e-7]  # 0.05 lowers val loss within steps; 1e-7 leaves the base model's val loss


def _sweep_yaml(folder: Path, sweep: dict) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"sweep": sweep}), encoding="utf-8")
    return path


def _script_val(monkeypatch, perfect_rate: float) -> None:
    """Every val row right for the trial at `perfect_rate` (macro-F1 1.0), all 'positive' for the others."""
    def factory(cfg, tokenizer, val_rows, labels):
        gold = [row["label"] for row in val_rows]
        perfect = cfg.train.learning_rate == perfect_rate
        return lambda model: list(gold) if perfect else ["positive"] * len(gold)

    monkeypatch.setattr(train_module, "val_predictor", factory)


def _all_positive_f1(folder: Path) -> float:
    gold = [json.loads(line)["label"] for line in (folder / "prepared" / "val.jsonl").read_text().splitlines()]
    return classification_metrics(gold, ["positive"] * len(gold), sorted(set(gold)))["macro_f1"]


def _study(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{folder / 'study.sqlite'}")


@pytest.fixture(scope="module")
def f1_sweep(tiny_model_dir, tmp_path_factory):
    """A finished grid over two learning rates, ranked by val macro-F1, where val loss ranks the other way."""
    root = tmp_path_factory.mktemp("f1-sweep")
    path = _sweep_yaml(root, {"sampler": "grid", "space": {"train.learning_rate": RATES}, "pruner": {"type": "none"},
                              "output_dir": str(root / "sweep")})
    overrides = tiny_overrides_at(tiny_model_dir, root) + FAST
    with pytest.MonkeyPatch.context() as monkeypatch:
        _script_val(monkeypatch, perfect_rate=1e-7)
        lines: list[str] = []
        run_sweep(load_config(path, overrides), log=lines.append)
    return path, overrides, root / "sweep", lines


def test_the_best_trial_has_the_highest_macro_f1_not_the_lowest_val_loss(f1_sweep):
    _, _, folder, lines = f1_sweep
    summary = json.loads((folder / "trials.json").read_text())
    by_rate = {t["params"]["train.learning_rate"]: t for t in summary["trials"]}
    assert [t["state"] for t in by_rate.values()] == ["complete"] * 2
    tiny, large = by_rate[1e-7], by_rate[0.05]
    assert tiny["val_loss"] > large["val_loss"], "precondition: val loss would pick the 0.05 trial"
    assert (tiny["val_macro_f1"], large["val_macro_f1"]) == (1.0, _all_positive_f1(folder))
    assert (summary["objective"], summary["direction"]) == ("val_macro_f1", "maximize")
    assert (summary["best_trial"], summary["best_val_macro_f1"]) == (tiny["trial"], 1.0)
    assert summary["best_val_loss"] == tiny["val_loss"]
    assert _study(folder).best_trial.number == tiny["trial"]

    best_config = (folder / "best_config.yaml").read_text()
    assert f"(trial {tiny['trial']}, val macro-F1 1.0)" in best_config.splitlines()[0]
    assert load_config(folder / "best_config.yaml").train.learning_rate == 1e-7
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert list(rows[0])[3:5] == ["val_macro_f1", "val_loss"], "the objective first, val loss kept"
    markdown = (folder / "sweep.md").read_text()
    assert "on val macro-F1 (`train.select_by`, higher is better)" in markdown
    assert f"Best: trial {tiny['trial']}, val macro-F1 1.0000 (val loss {tiny['val_loss']:.4f})" in markdown
    assert "| val macro-F1 | val loss | steps |" in markdown
    assert any("maximize val macro-F1" in line for line in lines)
    assert f"trial {tiny['trial']}: val macro-F1 1.0000 (val loss {tiny['val_loss']:.4f}, 2 steps" in "\n".join(lines)


def test_resume_with_another_select_by_is_refused(f1_sweep):
    path, overrides, folder, _ = f1_sweep
    with pytest.raises(DomaintuneError, match=r"scored by val_macro_f1 \(maximize\), and train\.select_by=val_loss "
                                              r"would score by val_loss \(minimize\): keep train\.select_by="
                                              r"val_macro_f1 to resume"):
        run_sweep(load_config(path, [*overrides, "train.select_by=val_loss"]), log=lambda line: None)
    with pytest.raises(DomaintuneError, match=r"scored by val_macro_f1 \(maximize\), and train\.select_by="
                                              r"val_accuracy would score by val_accuracy \(maximize\)"):
        run_sweep(load_config(path, [*overrides, "train.select_by=val_accuracy"]), log=lambda line: None)


def test_a_study_from_before_the_objective_was_val_loss(tiny_overrides):
    # Such a study stored no objective and was created "minimize": a select_by=val_macro_f1 config fits its
    # saved config, but its values are val losses, which a maximizing study would rank upside down.
    old = optuna.create_study(direction="minimize")
    old.set_user_attr("config", {"train": {"select_by": "val_macro_f1"}})
    cfg = load_config(None, [*tiny_overrides, *FAST])
    with pytest.raises(DomaintuneError, match=r"scored by val_loss \(minimize\), and train\.select_by=val_macro_f1"):
        check_same_objective(old, objective_of(cfg), Path("sweeps/old"))
    check_same_objective(old, objective_of(load_config(None, tiny_overrides)), Path("sweeps/old"))
    assert old.user_attrs["objective"] == "val_loss"


def test_the_pruner_sees_macro_f1_and_maximizes(tiny_model_dir, tmp_path, monkeypatch):
    # Grid order for seed 1 is 0.05 then 1e-7 (test_sweep.py). The second trial's macro-F1 is below the
    # first's at step 1, so a maximizing pruner stops it there; its val loss is worse too, but a pruner fed
    # val loss would record losses, and one minimizing macro-F1 would let it run.
    overrides = tiny_overrides_at(tiny_model_dir, tmp_path) + FAST + ["train.max_steps=4"]
    path = _sweep_yaml(tmp_path, {"sampler": "grid", "seed": 1, "space": {"train.learning_rate": RATES},
                                  "pruner": {"startup_trials": 1}, "output_dir": str(tmp_path / "sweep")})
    _script_val(monkeypatch, perfect_rate=0.05)
    run_sweep(load_config(path, overrides), log=lambda line: None)
    study = _study(tmp_path / "sweep")
    first, second = study.trials
    assert first.params["train.learning_rate"] == 0.05, "precondition: the grid's order for seed 1"
    assert (first.state, second.state) == (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert second.user_attrs["pruned_at_step"] == 1
    assert first.intermediate_values == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert second.intermediate_values == {1: _all_positive_f1(tmp_path / "sweep")}
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
