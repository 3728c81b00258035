"""`domaintune baseline`: TF-IDF + logistic regression on the prepared splits, its settings chosen on val."""

from __future__ import annotations

from domaintune.cli.common import add_verb, overrides_only


def register(subparsers) -> None:
    add_verb(subparsers, "baseline", "fit TF-IDF + logistic regression on the prepared splits (a classic baseline, "
             "features, C and class weights chosen on val)", reads_config=True, writes=True).set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api
    from domaintune.core.run_card import read_run_card
    from domaintune.evaluation.baseline_search import describe

    cfg = api.load_config(ns.config, overrides_only(ns))
    metrics = api.run_baseline(cfg, ns.overwrite)
    card = read_run_card(cfg.evaluate.baseline_output_dir)
    print(describe(card.selection.model_dump(mode="json")))
    print(f"{cfg.evaluate.baseline_output_dir}: accuracy {metrics['accuracy']} (95% {metrics['accuracy_ci']}), "
          f"macro-F1 {metrics['macro_f1']} (95% {metrics['macro_f1_ci']})")
