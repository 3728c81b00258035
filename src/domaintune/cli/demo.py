"""`domaintune demo`: prepare, train and compare on the embedded model and data."""

from __future__ import annotations

from domaintune.cli.common import add_verb, overrides_only


def register(subparsers) -> None:
    p = add_verb(subparsers, "demo", "prepare, train and compare on the embedded model and data",
                 reads_config=True, writes=True)
    p.add_argument("--compare", action="store_true",
                   help="also train full fine-tuning and the TF-IDF baseline; write report.html")
    p.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    overrides = overrides_only(ns)
    cfg = api.load_config(ns.config, overrides) if ns.config else api.demo_config(overrides)
    api.run_demo(cfg, compare=ns.compare, overwrite=ns.overwrite)
