"""`domaintune baseline`: TF-IDF + logistic regression on the prepared splits."""

from __future__ import annotations

from domaintune.cli.common import add_verb, overrides_only


def register(subparsers) -> None:
    add_verb(subparsers, "baseline", "fit TF-IDF + logistic regression on the prepared splits (a classic baseline)",
             reads_config=True, writes=True).set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    cfg = api.load_config(ns.config, overrides_only(ns))
    metrics = api.run_baseline(cfg, ns.overwrite)
    print(f"{cfg.evaluate.baseline_output_dir}: accuracy {metrics['accuracy']}, macro-F1 {metrics['macro_f1']}")
