"""`domaintune feedback export`: votes -> preference (DPO) and SFT datasets."""

from __future__ import annotations

from domaintune.cli.common import add_verb, targets_only
from domaintune.core.errors import DomaintuneError

USAGE = "usage: domaintune feedback export [--db DB] [--out FOLDER]"
REVIEWERS_SHOWN = 10  # most votes first; all of them are in export_card.json


def register(subparsers) -> None:
    p = add_verb(subparsers, "feedback", "'feedback export': votes -> preference (DPO) and SFT datasets",
                 reads_config=False, writes=True, words="'export'")
    p.add_argument("--db", default="runs/feedback.sqlite", help="votes database written by serve")
    p.add_argument("--out", default="feedback", help="folder for preference.jsonl and sft.jsonl")
    p.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    if targets_only(ns, USAGE) != ["export"]:
        raise DomaintuneError(USAGE)
    summary = api.run_feedback_export(ns.db, ns.out, overwrite=ns.overwrite)
    print(f"feedback written to {ns.out}: {summary['preference_pairs']} preference pairs "
          f"({summary['duplicate_pairs_merged']} duplicates merged), {summary['sft_rows']} SFT rows, "
          f"from {summary['votes']} votes of {len(summary['reviewers'])} reviewers")
    for name, counts in list(summary["reviewers"].items())[:REVIEWERS_SHOWN]:
        print(f"  {name}: {counts['votes']} votes, {counts['decisive']} decisive")
