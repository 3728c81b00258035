"""`domaintune evaluate [RUN|base ...]`: evaluate run folders (or the base model) on the test split."""

from __future__ import annotations

from domaintune.cli.common import add_verb, split_words

SHOWN = ("perplexity", "accuracy", "macro_f1")


def register(subparsers) -> None:
    add_verb(subparsers, "evaluate", "evaluate a run folder (or 'base') on the test split", reads_config=True,
             writes=True, words="run folders or 'base' (default: base), and key=value overrides"
             ).set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    overrides, targets = split_words(ns)
    cfg = api.load_config(ns.config, overrides)
    for target in targets or ["base"]:
        metrics = api.run_evaluate(cfg, target, ns.overwrite)
        shown = {k: metrics[k] for k in SHOWN if k in metrics}
        print(f"{target}: {shown}")
