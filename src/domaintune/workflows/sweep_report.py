"""The sweep report: trials table (md/csv/json), best config, parameter importance, quality against cost.

Trials are ranked, plotted and marked best by the sweep's objective (`train.select_by`'s val figure,
sweep_objective.py); beside another objective, val loss keeps its own column.

Importance is Optuna's fANOVA (a random forest over the complete trials; pruned trials carry no final
value and are left out), seeded with the sweep's seed so that the same study gives the same figures.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure  # not pyplot: no backend to select, nothing global to close
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from domaintune.core.config import config_to_yaml
from domaintune.core.io import atomic_write_json, atomic_write_text
from domaintune.core.schema import Config
from domaintune.workflows.sweep_objective import LABELS, SweepObjective, objective_of

COLUMNS = ("val_loss", "steps", "pruned_at_step", "train_seconds", "trial_seconds", "train_tokens_per_second",
           "trainable_parameters", "size_bytes", "peak_rss_bytes")


def write_report(study: optuna.Study, cfg: Config, folder: Path, best_config: Config | None) -> Path:
    """Write every report file into `folder`; returns `folder / "sweep.md"`."""
    objective = objective_of(cfg)
    trials = [_record(t, objective) for t in study.trials if t.state != TrialState.WAITING]
    complete = [t for t in trials if t["state"] == "complete"]
    best = objective.best(complete, lambda t: t[objective.key]) if complete else None
    seed = cfg.seed if cfg.sweep.seed is None else cfg.sweep.seed
    importance, importance_note = _importance(study, len(cfg.sweep.space), len(complete), seed)
    summary = {
        "sweep": str(folder),
        "base_model": cfg.model.name,
        "sampler": cfg.sweep.sampler,
        "pruner": cfg.sweep.pruner.model_dump(),
        "seed": seed,
        "objective": objective.key,
        "direction": objective.direction,
        "best_trial": best["trial"] if best else None,
        f"best_{objective.key}": best[objective.key] if best else None,
        "best_val_loss": best["val_loss"] if best else None,
        "importance": importance,
        "importance_method": importance_note,
        "trials": trials,
    }
    atomic_write_json(folder / "trials.json", summary)
    atomic_write_text(folder / "trials.csv", _csv(trials, list(cfg.sweep.space), objective))
    if best_config is not None and best is not None:
        header = (f"# The best trial of {folder} (trial {best['trial']}, {objective.label} {best[objective.key]}), "
                  "written by\n"
                  f"# domaintune sweep; train it with: domaintune train -c {folder / 'best_config.yaml'}\n")
        atomic_write_text(folder / "best_config.yaml", header + config_to_yaml(best_config))
    if importance:
        _plot_importance(importance, folder / "importance.png", importance_note, objective)
    else:  # a resumed sweep's earlier report may have left one that no longer holds
        (folder / "importance.png").unlink(missing_ok=True)
    if any(t[objective.key] is not None for t in trials):
        _plot_quality_vs_cost(trials, best, folder / "quality_vs_cost.png", objective)
    report = folder / "sweep.md"
    atomic_write_text(report, _markdown(summary, cfg, folder, objective))
    return report


def _record(trial: FrozenTrial, objective: SweepObjective) -> dict[str, Any]:
    a = trial.user_attrs
    state = trial.state.name.lower()
    if trial.state == TrialState.FAIL:
        state = "interrupted" if a.get("interrupted") else "failed"
    return {
        "trial": trial.number,
        "state": state,
        "params": trial.params,
        objective.key: a.get(objective.key),  # first: the figure the sweep ranks by
        "val_loss": a.get("val_loss"),
        "steps": a.get("steps"),
        "pruned_at_step": a.get("pruned_at_step"),
        "train_seconds": a.get("train_wall_seconds"),
        # The whole trial: model load, training, evaluations and saving.
        "trial_seconds": round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)
        if trial.datetime_complete and trial.datetime_start and not a.get("interrupted") else None,
        "train_tokens_per_second": a.get("train_tokens_per_second"),
        "trainable_parameters": a.get("trainable_parameters"),
        "size_bytes": a.get("weights_bytes"),
        "peak_rss_bytes": a.get("peak_rss_bytes"),
        "folder": a.get("folder"),
        "error": a.get("error"),
    }


def _importance(study: optuna.Study, params: int, complete: int, seed: int) -> tuple[dict[str, float] | None, str]:
    if params < 2:
        return None, "one searched key: nothing to apportion"
    # A forest fitted to fewer points than keys + 2 apportions noise: 2 complete trials over 4 keys gave
    # one key 0.55 and two others exactly 0 in a real sweep, which reads like a finding and is not one.
    needed = max(3, params + 2)
    if complete < needed:
        return None, f"not computed: {params} keys need at least {needed} complete trials (has {complete})"
    note = f"fANOVA (Optuna FanovaImportanceEvaluator, seed {seed}) over the {complete} complete trials"
    try:
        found = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    except (ValueError, RuntimeError) as exc:  # e.g. a key that took one value in every complete trial
        return None, f"not computed: {exc}"
    return {k: round(v, 4) for k, v in found.items()}, note


def _csv(trials: list[dict[str, Any]], keys: list[str], objective: SweepObjective) -> str:
    columns = list(dict.fromkeys((objective.key, *COLUMNS)))  # the objective first, val loss kept
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", *keys, *columns, "folder"])
    for t in trials:
        writer.writerow([t["trial"], t["state"], *(t["params"].get(k) for k in keys), *(t[c] for c in columns),
                         t["folder"]])
    return out.getvalue()


def _markdown(summary: dict[str, Any], cfg: Config, folder: Path, objective: SweepObjective) -> str:
    trials = summary["trials"]
    keys = list(cfg.sweep.space)
    states = {s: sum(t["state"] == s for t in trials) for s in ("complete", "pruned", "failed", "interrupted")}
    p = cfg.sweep.pruner
    pruner = "none" if p.type == "none" else (
        f"median ({p.startup_trials} startup trials, {p.warmup_steps} warm-up steps)")
    lines = [
        f"# Sweep {folder}",
        "",
        f"{len(trials)} trials ({', '.join(f'{n} {s}' for s, n in states.items() if n)}) of {cfg.model.name}, "
        f"sampler {cfg.sweep.sampler} (seed {summary['seed']}), pruner {pruner}, on {_ranked_by(objective)}.",
        "",
    ]
    best = summary["best_trial"]
    if best is not None:
        params = next(t["params"] for t in trials if t["trial"] == best)
        also = "" if objective.key == "val_loss" else f" (val loss {summary['best_val_loss']:.4f})"
        lines += [f"Best: trial {best}, {objective.label} {summary[f'best_{objective.key}']:.4f}{also}, "
                  f"{', '.join(f'`{k}={_value(v)}`' for k, v in params.items())}; its config: `best_config.yaml`.", ""]
    figures = list(dict.fromkeys((objective.key, "val_loss")))  # the objective first, val loss kept
    lines += [
        "| trial | state | " + " | ".join(f"`{k}`" for k in keys) + " | "
        + " | ".join(LABELS[f] for f in figures) + " | steps | train s | trainable params | size on disk |",
        "|" + "---|" * (len(keys) + len(figures) + 6),
    ]
    for t in trials:
        steps = f"{t['steps']} (pruned)" if t["state"] == "pruned" else _value(t["steps"])
        mark = " **best**" if t["trial"] == best else ""
        lines.append(f"| {t['trial']}{mark} | {t['state']} | " + " | ".join(_value(t["params"].get(k)) for k in keys)
                     + "".join(f" | {_value(t[f], 4)}" for f in figures)
                     + f" | {steps} | {_value(t['train_seconds'], 1)} | "
                     f"{_count(t['trainable_parameters'])} | {_mib(t['size_bytes'])} |")
    lines += ["", "## Importance", "", f"{summary['importance_method']}.", ""]
    if summary["importance"]:
        lines += ["| key | importance |", "|---|---|"]
        lines += [f"| `{k}` | {v:.3f} |" for k, v in summary["importance"].items()]
        lines += ["", "![importance](importance.png)", ""]
    lines += ["![quality against cost](quality_vs_cost.png)", "",
              "Every trial is a run folder: `domaintune evaluate -c best_config.yaml trials/trial-NNN` (that "
              "config reads the sweep's `prepared/` data) and `domaintune compare` take it as any run.", ""]
    failed = [t for t in trials if t["error"]]
    lines += [f"- trial {t['trial']} failed: {t['error']}" for t in failed]
    return "\n".join(lines).rstrip() + "\n"


def _ranked_by(objective: SweepObjective) -> str:
    if objective.key == "val_loss":
        return "val loss"
    return f"{objective.label} (`train.select_by`, higher is better)"


def _value(value: Any, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits is not None else f"{value:.3g}"
    return str(value)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.1f} MiB"


def _plot_importance(importance: dict[str, float], path: Path, note: str, objective: SweepObjective) -> None:
    fig = Figure(figsize=(6, 0.5 + 0.45 * len(importance)), dpi=100)
    ax = fig.subplots()
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel(f"importance (share of {objective.label} variance)")
    ax.set_title(note, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _plot_quality_vs_cost(trials: list[dict[str, Any]], best: dict[str, Any] | None, path: Path,
                          objective: SweepObjective) -> None:
    key = objective.key
    fig = Figure(figsize=(9, 3.6), dpi=100)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, column, label in ((axes[0], "train_seconds", "training time (s)"),
                              (axes[1], "size_bytes", "weights on disk (MiB)")):
        for state, marker in (("complete", "o"), ("pruned", "x")):
            shown = [t for t in trials if t["state"] == state and t[key] is not None and t[column]]
            scale = 2**20 if column == "size_bytes" else 1
            ax.scatter([t[column] / scale for t in shown], [t[key] for t in shown], marker=marker, label=state)
            for t in shown:
                ax.annotate(str(t["trial"]), (t[column] / scale, t[key]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        if best:
            scale = 2**20 if column == "size_bytes" else 1
            ax.scatter([best[column] / scale], [best[key]], marker="*", s=160, color="gold",
                       edgecolor="black", label="best", zorder=3)
        if column == "size_bytes":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{objective.label} (pruned: at the step it stopped)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
