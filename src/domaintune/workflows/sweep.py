"""`domaintune sweep`: an Optuna search over config keys, each trial an ordinary run folder.

Sweep folder layout (`sweep.output_dir`):
    study.sqlite          the Optuna study (every trial, its params, intermediate objective values, state)
    sweep.lock            held while a sweep runs, so two sweeps never share a folder
    prepared/             the data, prepared once for every trial
    trials/trial-NNN/     one run folder per trial (evaluate and compare take them as they are)
    sweep.md, trials.csv, trials.json, best_config.yaml, importance.png, quality_vs_cost.png
                          the report (sweep_report.py), rewritten at the end of every invocation

Optuna does the sampling (TPE or grid), the pruning decision (median of earlier trials at the same step)
and the storage; this module maps trials to configs, stops pruned trials through the Trainer's own
`control.should_training_stop`, and makes a killed sweep resumable. What a trial is scored by, and which
way is better, follows `train.select_by` (sweep_objective.py).
"""

from __future__ import annotations

import fcntl
import gc
import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from domaintune.core.config import validate_config
from domaintune.core.dotted import set_dotted
from domaintune.core.errors import DomaintuneError
from domaintune.core.outputs import config_inputs, data_inputs, open_output_in_place
from domaintune.core.process import optuna_verbosity
from domaintune.core.run_card import SweepTrial, read_training_run_card, write_run_card
from domaintune.core.schema import Config
from domaintune.core.sweep_config import SearchParam, choice_label
from domaintune.data.prepare import read_split, run_prepare
from domaintune.training.checkpoints import work_dir
from domaintune.training.train import run_train
from domaintune.workflows.sweep_objective import (
    PruneOnObjective,
    SweepObjective,
    check_same_objective,
    objective_of,
)
from domaintune.workflows.sweep_report import write_report

STUDY_NAME = "domaintune-sweep"
BUDGET_KEYS = ("trials", "timeout_minutes")  # may change between runs of one sweep; nothing else may


def run_sweep(cfg: Config, log: Callable[[str], None] = print, overwrite: bool = False) -> Path:
    """Run (or resume) the sweep `cfg.sweep` describes; returns the folder holding its report.

    An existing `sweep.output_dir` is resumed if it is a sweep folder; any other folder there is refused,
    or with `overwrite` replaced by a new sweep (outputs.py).
    """
    s = cfg.sweep
    if not s.space:
        raise DomaintuneError("the config has no sweep.space: name the keys to search (see configs/sweep.yaml)")
    folder = open_output_in_place(s.output_dir, "sweep", config_inputs(cfg) + data_inputs(cfg), overwrite,
                                  "sweep.output_dir")
    objective = objective_of(cfg)
    # One line per trial is printed here instead of Optuna's; its level is put back after the sweep.
    with optuna_verbosity(optuna.logging.WARNING), _exclusive(folder):
        study = _open_study(cfg, folder)
        _recover_interrupted(study, folder, log)
        prepared = _prepare_once(cfg, folder, log)
        trials_left, seconds_left = _budget_left(study, cfg)
        if trials_left == 0 or (seconds_left is not None and seconds_left <= 0):
            log(f"sweep {folder}: budget already spent ({_counted(study)} trials); writing the report")
        else:
            log(f"sweep {folder}: {_counted(study)} trials done, running "
                f"{'up to ' + str(trials_left) if trials_left else 'more'} ({s.sampler}, pruner {s.pruner.type}, "
                f"{objective.direction} {objective.label})")
            study.optimize(_Objective(cfg, folder, prepared, log), n_trials=trials_left, timeout=seconds_left,
                           catch=(DomaintuneError,), callbacks=[_report_trial(log, objective)],
                           gc_after_trial=True)
        return write_report(study, cfg, folder, _best_config(study, cfg, folder, prepared))


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """flock, not a pid file: the kernel drops it when the holder dies, even by SIGKILL."""
    with open(folder / "sweep.lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise DomaintuneError(f"{folder}: another sweep is running in this folder (pid {handle.read().strip()}); "
                                  "wait for it to finish or set another sweep.output_dir") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def _identity(cfg: Config) -> dict[str, Any]:
    """What a resumed sweep must share with the one that started: everything but the budget."""
    raw = cfg.model_dump(mode="json")
    for key in BUDGET_KEYS:
        raw["sweep"].pop(key)
    return raw


def _open_study(cfg: Config, folder: Path) -> optuna.Study:
    storage = f"sqlite:///{(folder / 'study.sqlite').resolve()}"
    objective = objective_of(cfg)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=objective.direction,
                                load_if_exists=True, pruner=_pruner(cfg))
    check_same_objective(study, objective, folder)  # before the config: it names the key and the direction
    identity = _identity(cfg)
    started_with = study.user_attrs.get("config")
    if started_with is None:
        study.set_user_attr("config", identity)
    elif started_with != identity:
        changed = sorted(k for k in set(_flat(started_with)) | set(_flat(identity))
                         if _flat(started_with).get(k) != _flat(identity).get(k))
        raise DomaintuneError(f"{folder}: this sweep started with another config (changed: {', '.join(changed[:6])}); "
                              "only sweep.trials and sweep.timeout_minutes may change when resuming: "
                              "set a new sweep.output_dir for a new search")
    study.sampler = _sampler(cfg, already=len(study.trials))
    return study


def _flat(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and prefix + key != "sweep.space":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _sampler(cfg: Config, already: int) -> optuna.samplers.BaseSampler:
    s = cfg.sweep
    seed = cfg.seed if s.seed is None else s.seed
    if s.sampler == "grid":
        return optuna.samplers.GridSampler({k: p.grid() for k, p in s.space.items()}, seed=seed)
    startup = s.startup_trials or min(10, max(1, (s.trials or 20) // 2))
    # A resumed sweep must not replay the first run's random draws, so the seed moves on with the trial count.
    return optuna.samplers.TPESampler(seed=seed + already, n_startup_trials=startup)


def _pruner(cfg: Config) -> optuna.pruners.BasePruner:
    p = cfg.sweep.pruner
    if p.type == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps)


def _recover_interrupted(study: optuna.Study, folder: Path, log: Callable[[str], None]) -> None:
    """A trial left RUNNING (the sweep was killed) is failed, its partial run folder removed, and re-queued."""
    storage = study._storage  # Optuna's public storage API; the study object only exposes it this way
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)  # a finished trial takes no attrs
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    retried = {n for t in study.get_trials(deepcopy=False) for n in t.system_attrs.get("retry_history", [])}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.user_attrs.get("interrupted") and trial.number not in retried:
            for path in (trial_dir(folder, trial.number), work_dir(trial_dir(folder, trial.number))):
                shutil.rmtree(path, ignore_errors=True)
            # Optuna's own retry: the same params (and grid point) as a waiting trial that runs first.
            RetryHeartbeatStaleTrialCallback()(study, trial)
            log(f"trial {trial.number} was interrupted: its folder is removed and its params run again")


def _prepare_once(cfg: Config, folder: Path, log: Callable[[str], None]) -> Path:
    prepared = folder / "prepared"
    if not (prepared / "data_card.json").is_file():
        log(f"preparing {cfg.data.source} once for every trial -> {prepared}")
        data_cfg = cfg.model_copy(deep=True)
        data_cfg.data.output_dir = str(prepared)
        run_prepare(data_cfg)
    if not read_split(prepared, "val"):
        raise DomaintuneError(f"{prepared}: the val split is empty; a sweep ranks trials on val "
                              f"(train.select_by={cfg.train.select_by}; raise data.val_fraction)")
    return prepared


def _counted(study: optuna.Study) -> int:
    return len(_counted_trials(study))


def _counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that used up budget: finished ones, but not those a kill interrupted (they run again)."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))]


def _budget_left(study: optuna.Study, cfg: Config) -> tuple[int | None, float | None]:
    s = cfg.sweep
    done = _counted_trials(study)
    trials = s.trials
    if trials is None and s.sampler == "grid":
        trials = len(_grid_points(s.space))
    trials_left = max(trials - len(done), 0) if trials is not None else None
    seconds_left = None
    if s.timeout_minutes is not None:
        spent = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done if t.datetime_start)
        seconds_left = s.timeout_minutes * 60 - spent
    return trials_left, seconds_left


def _grid_points(space: dict[str, SearchParam]) -> list[tuple]:
    return list(itertools.product(*(p.grid() for p in space.values())))


def trial_dir(folder: Path, number: int) -> Path:
    return folder / "trials" / f"trial-{number:03d}"


def trial_config(cfg: Config, values: dict[str, Any], run_dir: Path, prepared: Path) -> Config:
    """The base config with the trial's values set: an ordinary config, with no sweep section."""
    raw = cfg.model_dump(mode="json", exclude={"sweep"})
    for key, value in values.items():
        set_dotted(raw, key, value)
    raw["train"]["output_dir"] = str(run_dir)
    raw["data"]["output_dir"] = str(prepared)
    return validate_config(raw, f"trial {run_dir.name}")


def _suggest(trial: optuna.Trial, key: str, param: SearchParam) -> Any:
    if param.kind == "categorical":
        return _decode(param, trial.suggest_categorical(key, param.grid()))
    if param.kind == "int":
        return trial.suggest_int(key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(key, param.low, param.high, step=param.step, log=param.log)


def _decode(param: SearchParam, stored: Any) -> Any:
    """The config value behind what Optuna stored (a choice's label for categorical keys)."""
    if param.kind != "categorical":
        return stored
    return next(c for c in param.choices if choice_label(c) == stored)


def _best_config(study: optuna.Study, cfg: Config, folder: Path, prepared: Path) -> Config | None:
    """The best complete trial's config, training into runs/<sweep>-best (data stays the sweep's prepared/)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = objective_of(cfg).best(complete, lambda t: t.value)
    values = {key: _decode(p, best.params[key]) for key, p in cfg.sweep.space.items()}
    return trial_config(cfg, values, Path("runs") / f"{folder.name}-best", prepared)


class _Objective:
    def __init__(self, cfg: Config, folder: Path, prepared: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.folder, self.prepared, self.log = cfg, folder, prepared, log
        self.objective = objective_of(cfg)

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("interrupted", False)  # a retried trial inherits its predecessor's attrs
        values = {key: _suggest(trial, key, p) for key, p in self.cfg.sweep.space.items()}
        run_dir = trial_dir(self.folder, trial.number)
        trial.set_user_attr("folder", str(run_dir))
        self.log(f"trial {trial.number}: {_shown(trial.params)}")
        try:
            run_cfg = trial_config(self.cfg, values, run_dir, self.prepared)
            pruning = PruneOnObjective(trial, self.objective)
            run_train(run_cfg, callbacks=[pruning] if self.cfg.sweep.pruner.type != "none" else None)
        except DomaintuneError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            gc.collect()
        card = read_training_run_card(run_dir)
        state = "pruned" if pruning.pruned_at is not None else "complete"
        card.sweep = SweepTrial(study=str(self.folder), trial=trial.number, state=state,
                                pruned_at_step=pruning.pruned_at, params=trial.params)
        write_run_card(run_dir, card)
        for key in ("steps", "train_wall_seconds", "train_tokens_per_second", "trainable_parameters", "weights_bytes",
                    "peak_rss_bytes", "val_loss", self.objective.key):
            trial.set_user_attr(key, getattr(card, key))
        trial.set_user_attr("pruned_at_step", pruning.pruned_at)
        value = getattr(card, self.objective.key)  # the kept weights' figure: what select_by chose
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"{self.objective.label} {value} at step {pruning.pruned_at}")
        return value


def _shown(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _report_trial(log: Callable[[str], None], objective: SweepObjective):
    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        a = trial.user_attrs
        if trial.state == TrialState.COMPLETE:
            # Val loss stays informative beside another objective.
            loss = "" if objective.key == "val_loss" else f"val loss {a['val_loss']:.4f}, "
            log(f"trial {trial.number}: {objective.label} {trial.value:.4f} "
                f"({loss}{a['steps']} steps, {a['train_wall_seconds']:.0f} s)")
        elif trial.state == TrialState.PRUNED:
            log(f"trial {trial.number}: pruned at step {a.get('pruned_at_step')} "
                f"({objective.label} {a.get(objective.key)})")
        else:
            log(f"trial {trial.number}: {trial.state.name.lower()}: {a.get('error', 'see the traceback above')}")

    return report
