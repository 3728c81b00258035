"""`domaintune sweep CONFIG`: search config keys with Optuna; each trial is a run folder."""

from __future__ import annotations

from domaintune.cli.common import add_verb, split_words
from domaintune.core.errors import DomaintuneError


def register(subparsers) -> None:
    add_verb(subparsers, "sweep", "search config keys with Optuna (TPE or grid, pruning, resumable); each trial "
             "is a run folder", reads_config=True, writes=True,
             words="the sweep config (or -c CONFIG), and key=value overrides").set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    overrides, targets = split_words(ns)
    if len(targets) > 1 or (targets and ns.config):
        raise DomaintuneError("sweep takes one config: domaintune sweep CONFIG [key=value ...]")
    report = api.run_sweep(api.load_config(ns.config or (targets or [None])[0], overrides), overwrite=ns.overwrite)
    print(report.read_text(encoding="utf-8") + f"\nreport: {report}")
