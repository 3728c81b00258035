"""`domaintune prepare`: clean, deduplicate and split the data; write a data card."""

from __future__ import annotations

from domaintune.cli.common import add_verb, overrides_only


def register(subparsers) -> None:
    add_verb(subparsers, "prepare", "clean, deduplicate and split the data; write a data card",
             reads_config=True, writes=True).set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api
    from domaintune.data.card import summarize
    from domaintune.data.prepare import read_data_card

    folder = api.run_prepare(api.load_config(ns.config, overrides_only(ns)), ns.overwrite)
    print(f"{summarize(read_data_card(folder))}\nprepared data written to {folder} (see data_card.md)")
