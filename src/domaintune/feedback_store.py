"""Blind A/B comparisons and reviewers' votes, kept in SQLite (WAL mode) next to the runs.

A comparison is one prompt answered by two models, shown as A (left) and B (right) in an order drawn at
random and recorded here; a vote names A, B or a tie, may rate each answer 1-5 for quality and domain
fit, and may carry a comment. One vote per comparison (a UNIQUE constraint), so a retried request can
never count twice. Every statement is parameterised.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scipy.stats import binomtest

from .errors import DomaintuneError

DB_NAME = "feedback.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS comparisons (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    prompt TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('test', 'typed')),
    source_id TEXT,
    left_model TEXT NOT NULL,
    right_model TEXT NOT NULL,
    left_answer TEXT NOT NULL,
    right_answer TEXT NOT NULL,
    params TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    comparison_id TEXT NOT NULL UNIQUE REFERENCES comparisons(id),
    created_at TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),
    winner_model TEXT,
    left_quality INTEGER CHECK (left_quality BETWEEN 1 AND 5),
    left_domain_fit INTEGER CHECK (left_domain_fit BETWEEN 1 AND 5),
    right_quality INTEGER CHECK (right_quality BETWEEN 1 AND 5),
    right_domain_fit INTEGER CHECK (right_domain_fit BETWEEN 1 AND 5),
    comment TEXT
);
"""
RATING_COLUMNS = ("left_quality", "left_domain_fit", "right_quality", "right_domain_fit")


class UnknownComparison(LookupError):
    pass


class AlreadyVoted(Exception):
    pass


@dataclass
class Comparison:
    id: str
    prompt: str
    source: str
    source_id: str | None
    left_model: str
    right_model: str
    left_answer: str
    right_answer: str
    params: dict
    voted: bool = False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class FeedbackStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            # WAL lets the review page read results while votes are being written.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DomaintuneError(f"{self.path}: SQLite could not switch to WAL mode (got {mode})")
            conn.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            with conn:  # one transaction: committed on success, rolled back on error
                yield conn
        finally:
            conn.close()

    def add_comparison(self, prompt: str, source: str, source_id: str | None, left_model: str, right_model: str,
                       left_answer: str, right_answer: str, params: dict) -> Comparison:
        comparison = Comparison(uuid.uuid4().hex, prompt, source, source_id, left_model, right_model, left_answer,
                                right_answer, params)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO comparisons (id, created_at, prompt, source, source_id, left_model, right_model, "
                "left_answer, right_answer, params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (comparison.id, _now(), prompt, source, source_id, left_model, right_model, left_answer,
                 right_answer, json.dumps(params)),
            )
        return comparison

    def get_comparison(self, comparison_id: str) -> Comparison:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT c.*, v.id AS vote_id FROM comparisons c LEFT JOIN votes v ON v.comparison_id = c.id "
                "WHERE c.id = ?", (comparison_id,)
            ).fetchone()
        if row is None:
            raise UnknownComparison(comparison_id)
        return Comparison(row["id"], row["prompt"], row["source"], row["source_id"], row["left_model"],
                          row["right_model"], row["left_answer"], row["right_answer"], json.loads(row["params"]),
                          voted=row["vote_id"] is not None)

    def add_vote(self, comparison_id: str, choice: str, ratings: dict[str, int | None], comment: str | None) -> int:
        """Record a vote; raises UnknownComparison or AlreadyVoted. Returns the vote's id."""
        comparison = self.get_comparison(comparison_id)
        winner = {"A": comparison.left_model, "B": comparison.right_model}.get(choice)
        values = [ratings.get(column) for column in RATING_COLUMNS]
        try:
            with self._connect() as conn:
                cursor = conn.execute(
                    "INSERT INTO votes (comparison_id, created_at, choice, winner_model, left_quality, "
                    "left_domain_fit, right_quality, right_domain_fit, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (comparison_id, _now(), choice, winner, *values, comment or None),
                )
                return int(cursor.lastrowid)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise AlreadyVoted(comparison_id) from None
            raise

    def count_votes(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0])

    def voted_comparisons(self) -> list[sqlite3.Row]:
        """Every comparison that has a vote, joined with it, oldest first."""
        with self._connect() as conn:
            return conn.execute(
                "SELECT c.*, v.choice, v.winner_model, v.left_quality, v.left_domain_fit, v.right_quality, "
                "v.right_domain_fit, v.comment, v.created_at AS voted_at "
                "FROM comparisons c JOIN votes v ON v.comparison_id = c.id ORDER BY v.id"
            ).fetchall()

    def pair_results(self, confidence: float = 0.95) -> list[dict]:
        """Per model pair: wins, ties and the first model's win rate over decisive votes with a Wilson interval."""
        pairs: dict[tuple[str, str], dict] = {}
        for row in self.voted_comparisons():
            first, second = sorted((row["left_model"], row["right_model"]))
            tally = pairs.setdefault((first, second), {"model_a": first, "model_b": second, "wins_a": 0,
                                                       "wins_b": 0, "ties": 0})
            if row["choice"] == "tie":
                tally["ties"] += 1
            else:
                tally["wins_a" if row["winner_model"] == first else "wins_b"] += 1
        for tally in pairs.values():
            decisive = tally["wins_a"] + tally["wins_b"]
            tally["votes"] = decisive + tally["ties"]
            tally["win_rate_a"] = tally["wins_a"] / decisive if decisive else None
            tally["ci_low"] = tally["ci_high"] = None
            if decisive:
                # Wilson's interval stays inside [0, 1] and behaves at small counts, unlike the normal one.
                ci = binomtest(tally["wins_a"], decisive).proportion_ci(confidence, method="wilson")
                tally["ci_low"], tally["ci_high"] = ci.low, ci.high
        return [pairs[key] for key in sorted(pairs)]


def default_db_path(runs: list[str | Path], fallback: str | Path = "runs") -> Path:
    """`feedback.sqlite` in the folder holding the (first) run folder, so votes live next to the runs."""
    return (Path(runs[0]).resolve().parent if runs else Path(fallback)) / DB_NAME
