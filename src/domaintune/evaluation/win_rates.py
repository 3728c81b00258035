"""Reviewers' votes as win rates per model pair, with Wilson intervals.

The review page (serving/) writes the votes; compare (reporting/) shows their win rates beside the
metrics. The two are siblings that must not import each other, so the reading and the counting live
here, below both: serving's results page and compare's report give one number for one database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from domaintune.core.errors import DomaintuneError
from domaintune.evaluation.uncertainty import proportion_interval

VOTES_SCHEMA_VERSION = 2  # PRAGMA user_version of the database serving/feedback_store.py writes


def pair_results(votes: Iterable[Mapping]) -> list[dict]:
    """Per model pair (`model_a` < `model_b`): wins, ties, reviewers and model_a's win rate over the
    decisive votes with its 95% Wilson interval (ties are counted apart, not as half a win). Each vote
    needs `model_a`, `model_b`, `choice` ('A', 'B' or 'tie'), `winner_model` and `reviewer`."""
    pairs: dict[tuple[str, str], dict] = {}
    reviewers: dict[tuple[str, str], set[str]] = {}
    for vote in votes:
        key = (vote["model_a"], vote["model_b"])
        tally = pairs.setdefault(key, {"model_a": key[0], "model_b": key[1], "wins_a": 0, "wins_b": 0, "ties": 0})
        reviewers.setdefault(key, set()).add(vote["reviewer"])
        if vote["choice"] == "tie":
            tally["ties"] += 1
        else:
            tally["wins_a" if vote["winner_model"] == key[0] else "wins_b"] += 1
    for key, tally in pairs.items():
        decisive = tally["wins_a"] + tally["wins_b"]
        tally["votes"] = decisive + tally["ties"]
        tally["reviewers"] = len(reviewers[key])
        tally["win_rate_a"] = tally["wins_a"] / decisive if decisive else None
        # Wilson's interval stays inside [0, 1] and behaves at small counts, unlike the normal one.
        tally["ci_low"], tally["ci_high"] = proportion_interval(tally["wins_a"], decisive) or (None, None)
    return [pairs[key] for key in sorted(pairs)]


def read_votes(path: str | Path) -> list[dict]:
    """The votes of a review database, opened read-only (a report never changes the votes)."""
    path = Path(path)
    if not path.is_file():
        raise DomaintuneError(f"{path}: feedback database not found; give the file `domaintune serve` keeps "
                              "the review page's votes in (feedback.sqlite beside the runs)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DomaintuneError(f"{path}: cannot be opened as a feedback database ({exc})") from None
    conn.row_factory = sqlite3.Row
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != VOTES_SCHEMA_VERSION:
            raise DomaintuneError(f"{path}: votes database of schema {version}, this domaintune reads "
                                  f"{VOTES_SCHEMA_VERSION}; serve with this domaintune to collect votes again")
        rows = conn.execute("SELECT model_a, model_b, choice, winner_model, reviewer FROM votes ORDER BY id").fetchall()
    except sqlite3.DatabaseError as exc:
        raise DomaintuneError(f"{path}: not a feedback database ({exc})") from None
    finally:
        conn.close()
    return [dict(row) for row in rows]
