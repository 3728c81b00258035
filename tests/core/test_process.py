"""Process-wide settings are made only at the entry: a stage called from Python leaves them as it found them."""

from __future__ import annotations

import logging

import matplotlib
import optuna
import torch

from domaintune import load_config, run_evaluate, run_prepare
from domaintune.core.process import optuna_verbosity, torch_threads


def _process_state() -> dict:
    return {
        "threads": torch.get_num_threads(),
        # Not matplotlib.get_backend(): on recent matplotlib asking resolves (and so sets) the backend.
        "backend": matplotlib.rcParams._get_backend_or_none(),
        "optuna": optuna.logging.get_verbosity(),
        "root_handlers": list(logging.getLogger().handlers),
        "root_level": logging.getLogger().level,
    }


def test_prepare_and_evaluate_from_python_leave_global_state(tiny_overrides):
    before = _process_state()
    other_threads = 1 if before["threads"] != 1 else 2  # the config asks for a count the process does not have
    cfg = load_config(None, [*tiny_overrides, f"threads={other_threads}"])
    run_prepare(cfg)  # draws the token-length histogram
    assert _process_state() == before
    metrics = run_evaluate(cfg)
    assert metrics["test_rows"] > 0
    assert _process_state() == before


def test_torch_threads_applies_inside_and_restores_after_an_error():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    try:
        with torch_threads(other) as inside:
            assert inside == torch.get_num_threads() == other
            raise RuntimeError("the stage failed")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before


def test_optuna_verbosity_is_put_back():
    before = optuna.logging.get_verbosity()
    quieter = optuna.logging.ERROR if before != optuna.logging.ERROR else optuna.logging.WARNING
    with optuna_verbosity(quieter):
        assert optuna.logging.get_verbosity() == quieter
    assert optuna.logging.get_verbosity() == before
