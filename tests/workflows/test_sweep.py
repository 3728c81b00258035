"""`domaintune sweep` on the tiny Llama: search-space checks, grid, pruning, budget, resume, report, best config."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from conftest import slow_steps_cli, tiny_overrides_at
from domaintune import load_config, run_compare, run_evaluate, run_prepare, run_sweep, run_train
from domaintune.core.errors import DomaintuneError

# Two steps per trial, val loss after each: enough to prune, fast enough for many trials.
FAST = ["train.max_steps=2", "train.eval_steps=1", "train.warmup_ratio=0", "train.logging_steps=1"]


def _sweep_yaml(folder: Path, sweep: dict) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"sweep": sweep}), encoding="utf-8")
    return path


def _trials(folder: Path) -> list[dict]:
    return json.loads((folder / "trials.json").read_text())["trials"]


@pytest.fixture(scope="module")
def grid_sweep(tiny_model_dir, tmp_path_factory):
    """A finished 2 x 2 grid (rank x target modules), no pruning: the report, best config and trials."""
    root = tmp_path_factory.mktemp("grid-sweep")
    overrides = tiny_overrides_at(tiny_model_dir, root) + FAST
    space = {"train.lora.r": [2, 4], "train.lora.target_modules": ["all-linear", ["q_proj", "v_proj"]]}
    path = _sweep_yaml(root, {"sampler": "grid", "space": space, "pruner": {"type": "none"},
                              "output_dir": str(root / "sweep")})
    cfg = load_config(path, overrides)
    report = run_sweep(cfg, log=lambda line: None)
    return cfg, report.parent


@pytest.mark.parametrize("space, extra, message", [
    ({"train.lora.rnak": [4, 8]}, [],
     r"unknown key 'train\.lora\.rnak' \(did you mean 'train\.lora\.r'\?\)"),
    ({"data.source": ["a.csv", "b.csv"]}, [], r"'data\.source' cannot be searched: data is prepared once"),
    ({"train.output_dir": ["a", "b"]}, [], r"'train\.output_dir' cannot be searched"),
    ({"train.select_by": ["val_loss", "val_macro_f1"]}, [],
     r"'train\.select_by' cannot be searched: it is the sweep's objective"),
    ({"train": [{"lora": {"r": 4}}, {"select_by": "val_accuracy"}]}, [],
     r"'train\.select_by' \(set by 'train'\) cannot be searched: it is the sweep's objective"),
    ({"train.lora.r": [0, 8]}, [], r"'train\.lora\.r' value 0: key 'train\.lora\.r' expects int"),
    ({"train.lora.r": {"low": 8, "high": 4}}, [], r"'train\.lora\.r': the int range needs low < high"),
    ({"train.learning_rate": {"low": 1e-5, "hgh": 1e-3}}, [],
     r"unknown key 'sweep\.space\.train\.learning_rate\.hgh' \(did you mean '[\w.]+\.learning_rate\.high'"),
    ({"train": [{"methd": "full"}]}, [], r"'train' value \{'methd': 'full'\}: unknown key 'train\.methd'"),
    ({"train.lora": [8, 16]}, [], r"'train\.lora' is a section: its choices must be mappings"),
    ({"train.learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, ["sweep.sampler=grid"],
     r"'train\.learning_rate': sampler grid needs `choices` or a `step`"),
    ({"train.lora.r": [4, 8]}, ["sweep.trials=null"], r"sweep\.sampler=tpe needs a budget"),
    ({"train.lora.r": [4, 8]}, ["train.eval_steps=null"], r"sweep\.pruner\.type=median needs train\.eval_steps"),
])
def test_search_space_errors_name_the_file_and_key(tmp_path, space, extra, message):
    path = _sweep_yaml(tmp_path, {"trials": 2, "space": space})
    with pytest.raises(DomaintuneError, match=r"sweep\.yaml: (sweep\.space: )?" + message):
        load_config(path, ["train.eval_steps=4", *extra])


def test_grid_runs_every_combination_once_and_decodes_lists(grid_sweep):
    _, folder = grid_sweep
    trials = _trials(folder)
    assert [t["state"] for t in trials] == ["complete"] * 4
    seen = {(t["params"]["train.lora.r"], t["params"]["train.lora.target_modules"]) for t in trials}
    assert seen == {(r, m) for r in (2, 4) for m in ("all-linear", "q_proj,v_proj")}
    for t in trials:
        adapter = json.loads((Path(t["folder"]) / "adapter" / "adapter_config.json").read_text())
        assert adapter["r"] == t["params"]["train.lora.r"]
        if t["params"]["train.lora.target_modules"] == "q_proj,v_proj":
            assert set(adapter["target_modules"]) == {"q_proj", "v_proj"}


def test_report_files_hold_every_trial(grid_sweep):
    cfg, folder = grid_sweep
    summary = json.loads((folder / "trials.json").read_text())
    best = min(summary["trials"], key=lambda t: t["val_loss"])
    assert summary["best_trial"] == best["trial"] and summary["best_val_loss"] == best["val_loss"]
    assert set(summary["importance"]) == set(cfg.sweep.space)
    assert "seed 42" in summary["importance_method"]
    for t in summary["trials"]:
        assert t["steps"] == 2 and t["train_seconds"] > 0 and t["trainable_parameters"] > 0 and t["size_bytes"] > 0
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert len(rows) == 4 and {"train.lora.r", "val_loss", "pruned_at_step", "size_bytes"} <= set(rows[0])
    markdown = (folder / "sweep.md").read_text()
    assert f"Best: trial {best['trial']}" in markdown and markdown.count("| complete |") == 4
    for name in ("importance.png", "quality_vs_cost.png", "best_config.yaml", "study.sqlite"):
        assert (folder / name).stat().st_size > 0, name


def test_best_config_trains_and_compare_takes_trials(grid_sweep, tmp_path):
    _, folder = grid_sweep
    summary = json.loads((folder / "trials.json").read_text())
    best = load_config(folder / "best_config.yaml", [f"train.output_dir={tmp_path / 'best'}"])
    params = next(t["params"] for t in summary["trials"] if t["trial"] == summary["best_trial"])
    assert best.train.lora.r == params["train.lora.r"] and best.sweep.space == {}
    run_dir = run_train(best)
    assert json.loads((run_dir / "run_card.json").read_text())["val_loss"] == pytest.approx(summary["best_val_loss"])

    ranked = sorted(summary["trials"], key=lambda t: t["val_loss"])[:2]
    for t in ranked:  # best_config.yaml reads the sweep's prepared data, so it evaluates any trial
        run_evaluate(best, t["folder"])
    report = run_compare([t["folder"] for t in ranked], tmp_path / "compare", latency=None)
    rows = json.loads((report.parent / "comparison.json").read_text())["rows"]
    assert list(dict.fromkeys(r["folder"] for r in rows)) == [t["folder"] for t in ranked]


def test_a_pruned_trial_stops_early_and_is_marked(tiny_model_dir, tmp_path):
    # Grid order is a seeded shuffle (numpy's frozen legacy stream): seed 1 trains the good rate first, so the
    # hopeless one is worse than the median at its first evaluation and is stopped there.
    overrides = tiny_overrides_at(tiny_model_dir, tmp_path) + FAST + ["train.max_steps=4"]
    path = _sweep_yaml(tmp_path, {"sampler": "grid", "seed": 1, "space": {"train.learning_rate": [0.05, 1e-7]},
                                  "pruner": {"startup_trials": 1}, "output_dir": str(tmp_path / "sweep")})
    run_sweep(load_config(path, overrides), log=lambda line: None)
    first, second = _trials(tmp_path / "sweep")
    assert first["params"]["train.learning_rate"] == 0.05, "precondition: the grid's order for seed 1"
    assert (first["state"], first["steps"], first["pruned_at_step"]) == ("complete", 4, None)
    assert (second["state"], second["steps"], second["pruned_at_step"]) == ("pruned", 1, 1)
    card = json.loads((Path(second["folder"]) / "run_card.json").read_text())
    assert card["steps"] == 1 and card["sweep"]["state"] == "pruned" and card["sweep"]["pruned_at_step"] == 1
    assert "1 (pruned)" in (tmp_path / "sweep" / "sweep.md").read_text()


def test_a_run_reuses_the_loops_last_evaluation(tiny_overrides):
    # Each trial evaluates every train.eval_steps; the closing val loss must not cost one more val pass.
    cfg = load_config(None, [*tiny_overrides, *FAST, "train.max_steps=2"])
    run_prepare(cfg)
    run_dir = run_train(cfg)
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    assert [r["step"] for r in evals] == [1, 2]
    assert json.loads((run_dir / "run_card.json").read_text())["val_loss"] == round(evals[-1]["eval_loss"], 5)


def test_budget_counts_finished_trials_and_a_changed_space_is_refused(tiny_model_dir, tmp_path):
    overrides = tiny_overrides_at(tiny_model_dir, tmp_path) + FAST
    space = {"train.learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}}
    path = _sweep_yaml(tmp_path, {"trials": 2, "space": space, "output_dir": str(tmp_path / "sweep")})
    run_sweep(load_config(path, overrides), log=lambda line: None)
    assert len(_trials(tmp_path / "sweep")) == 2
    run_sweep(load_config(path, overrides), log=lambda line: None)
    assert len(_trials(tmp_path / "sweep")) == 2, "a finished budget runs nothing more"
    run_sweep(load_config(path, [*overrides, "sweep.trials=3"]), log=lambda line: None)
    assert len(_trials(tmp_path / "sweep")) == 3, "a raised budget runs only the difference"
    changed = [*overrides, "sweep.trials=3", "train.lora.r=4"]
    with pytest.raises(DomaintuneError, match=r"started with another config \(changed: train\.lora\.r\)"):
        run_sweep(load_config(path, changed), log=lambda line: None)


def test_sigkill_mid_trial_then_resume_finishes_the_grid(tiny_model_dir, tmp_path):
    overrides = tiny_overrides_at(tiny_model_dir, tmp_path) + FAST + ["train.max_steps=4"]
    folder = tmp_path / "sweep"
    # A section key: rank and alpha move together.
    space = {"train.lora": [{"r": 2, "alpha": 4}, {"r": 4, "alpha": 8}, {"r": 8, "alpha": 16}]}
    path = _sweep_yaml(tmp_path, {"sampler": "grid", "space": space, "pruner": {"type": "none"},
                                  "output_dir": str(folder)})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", slow_steps_cli(0.3), "sweep", str(path), *overrides], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def wait_for(path: Path) -> None:
        deadline = time.monotonic() + 120
        while not path.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)

    wait_for(folder / "study.sqlite")  # written once the child holds the lock
    with pytest.raises(DomaintuneError, match=r"another sweep is running in this folder \(pid \d+\)"):
        run_sweep(load_config(path, overrides), log=lambda line: None)
    running = folder / "trials" / ".trial-001.partial"
    wait_for(running)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the sweep must be killed mid-trial, not finish"
    assert (folder / "trials" / "trial-000" / "run_card.json").is_file() and running.exists()

    lines: list[str] = []
    run_sweep(load_config(path, overrides), log=lines.append)
    assert any("trial 1 was interrupted" in line for line in lines)
    trials = _trials(folder)
    assert [t["state"] for t in trials] == ["complete", "interrupted", "complete", "complete"]
    assert trials[2]["params"] == trials[1]["params"], "the interrupted trial's params run again, first"
    done = [t for t in trials if t["state"] == "complete"]
    labels = {"alpha=4,r=2": 2, "alpha=8,r=4": 4, "alpha=16,r=8": 8}  # a mapping's label, in the YAML's key order
    assert sorted(t["params"]["train.lora"] for t in done) == sorted(labels)
    assert not running.exists() and not (folder / "trials" / "trial-001").exists()
    for t in done:
        weights = load_file(Path(t["folder"]) / "adapter" / "adapter_model.safetensors")
        assert {w.shape[0] for k, w in weights.items() if "lora_A" in k} == {labels[t["params"]["train.lora"]]}


def test_importance_needs_more_complete_trials_than_keys():
    import optuna
    from optuna.distributions import FloatDistribution

    from domaintune.workflows.sweep_report import _importance

    keys = {f"k{i}": FloatDistribution(0.0, 1.0) for i in range(3)}
    study = optuna.create_study()
    for n in range(5):
        study.add_trial(optuna.trial.create_trial(
            params={k: (n * 0.37 + i * 0.11) % 1 for i, k in enumerate(keys)}, distributions=keys, value=float(n)))
    found, note = _importance(study, params=3, complete=4, seed=0)
    assert found is None and "at least 5 complete trials (has 4)" in note
    found, note = _importance(study, params=3, complete=5, seed=0)
    assert set(found) == set(keys)
