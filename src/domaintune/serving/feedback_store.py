"""Blind A/B comparisons and reviewers' votes, kept in SQLite (WAL mode) next to the runs.

A comparison is one prompt answered by two models for one reviewer, shown as A (left) and B (right)
in an order drawn at random and recorded here; a vote names A, B or a tie, may rate each answer 1-5
for quality and domain fit, and may carry a comment. Two UNIQUE constraints keep ballots honest: one
vote per comparison (a retried request never counts twice) and one vote per reviewer, prompt and model
pair (a reviewer who has learnt which answer is whose cannot vote the same prompt again). Prompts are
drawn from the val or review split, or typed; the schema refuses a test-split prompt. Every statement
is parameterised.

A database from before reviewer tokens (schema version 1) is refused with one line, not migrated: its
votes carry no reviewer, so they cannot be deduplicated, and its prompts came from the test split.
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

from domaintune.core.errors import DomaintuneError
from domaintune.data.clean import normalized_key
from domaintune.evaluation.win_rates import VOTES_SCHEMA_VERSION, pair_results

DB_NAME = "feedback.sqlite"
SCHEMA_VERSION = VOTES_SCHEMA_VERSION  # PRAGMA user_version; 0 on databases written before reviewer tokens
SOURCES = ("val", "review", "typed")  # where a prompt came from; never "test"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS comparisons (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    prompt TEXT NOT NULL,
    prompt_key TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN {SOURCES}),
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
    reviewer TEXT NOT NULL,
    prompt_key TEXT NOT NULL,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL CHECK (model_a < model_b),
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),
    winner_model TEXT,
    left_quality INTEGER CHECK (left_quality BETWEEN 1 AND 5),
    left_domain_fit INTEGER CHECK (left_domain_fit BETWEEN 1 AND 5),
    right_quality INTEGER CHECK (right_quality BETWEEN 1 AND 5),
    right_domain_fit INTEGER CHECK (right_domain_fit BETWEEN 1 AND 5),
    comment TEXT,
    UNIQUE (reviewer, prompt_key, model_a, model_b)
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
RATING_COLUMNS = ("left_quality", "left_domain_fit", "right_quality", "right_domain_fit")


def prompt_key(prompt: str) -> str:
    """One ballot per prompt: case and whitespace do not make a new prompt."""
    return normalized_key(prompt)


def model_pair(first: str, second: str) -> tuple[str, str]:
    """A pair in one order, whichever side each model was shown on."""
    return (first, second) if first < second else (second, first)


class UnknownComparison(LookupError):
    pass


class AlreadyVoted(Exception):
    """This comparison has a vote, or its reviewer has voted on this prompt and pair before."""


class NotYourComparison(Exception):
    """A vote from another reviewer than the one the comparison was made for."""


@dataclass
class Comparison:
    id: str
    reviewer: str
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
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            has_tables = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'comparisons'").fetchone()[0]
            if has_tables and version != SCHEMA_VERSION:
                raise DomaintuneError(
                    f"{self.path}: votes database of schema {version}, this domaintune reads schema "
                    f"{SCHEMA_VERSION} (votes with reviewer tokens, prompts never from test); move it aside and "
                    "serve starts a new one (export the old votes with the domaintune that wrote them)"
                )
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
                       left_answer: str, right_answer: str, params: dict, *, reviewer: str) -> Comparison:
        comparison = Comparison(uuid.uuid4().hex, reviewer, prompt, source, source_id, left_model, right_model,
                                left_answer, right_answer, params)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO comparisons (id, created_at, reviewer, prompt, prompt_key, source, source_id, "
                "left_model, right_model, left_answer, right_answer, params) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (comparison.id, _now(), reviewer, prompt, prompt_key(prompt), source, source_id, left_model,
                 right_model, left_answer, right_answer, json.dumps(params)),
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
        return Comparison(row["id"], row["reviewer"], row["prompt"], row["source"], row["source_id"],
                          row["left_model"], row["right_model"], row["left_answer"], row["right_answer"],
                          json.loads(row["params"]), voted=row["vote_id"] is not None)

    def has_voted(self, reviewer: str, prompt: str, pair: tuple[str, str]) -> bool:
        with self._connect() as conn:
            return conn.execute(
                "SELECT 1 FROM votes WHERE reviewer = ? AND prompt_key = ? AND model_a = ? AND model_b = ?",
                (reviewer, prompt_key(prompt), *model_pair(*pair)),
            ).fetchone() is not None

    def voted_sources(self, reviewer: str, pair: tuple[str, str], source: str) -> set[str]:
        """Row ids of `source` this reviewer has voted on for this pair (to draw them no more)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT c.source_id FROM votes v JOIN comparisons c ON c.id = v.comparison_id "
                "WHERE v.reviewer = ? AND v.model_a = ? AND v.model_b = ? AND c.source = ?",
                (reviewer, *model_pair(*pair), source),
            ).fetchall()
        return {r[0] for r in rows}

    def add_vote(self, comparison_id: str, choice: str, ratings: dict[str, int | None], comment: str | None, *,
                 reviewer: str) -> int:
        """Record `reviewer`'s vote; raises UnknownComparison, NotYourComparison or AlreadyVoted. Returns
        the vote's id."""
        comparison = self.get_comparison(comparison_id)
        if comparison.reviewer != reviewer:
            raise NotYourComparison(comparison_id)
        winner = {"A": comparison.left_model, "B": comparison.right_model}.get(choice)
        values = [ratings.get(column) for column in RATING_COLUMNS]
        try:
            with self._connect() as conn:
                cursor = conn.execute(
                    "INSERT INTO votes (comparison_id, created_at, reviewer, prompt_key, model_a, model_b, choice, "
                    "winner_model, left_quality, left_domain_fit, right_quality, right_domain_fit, comment) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (comparison_id, _now(), reviewer, prompt_key(comparison.prompt),
                     *model_pair(comparison.left_model, comparison.right_model), choice, winner, *values,
                     comment or None),
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
                "v.right_domain_fit, v.comment, v.created_at AS voted_at, v.model_a, v.model_b "
                "FROM comparisons c JOIN votes v ON v.comparison_id = c.id ORDER BY v.id"
            ).fetchall()

    def pair_results(self) -> list[dict]:
        """Per model pair: wins, ties, reviewers and the first model's win rate over decisive votes with a
        Wilson interval (evaluation/win_rates.py, which compare's report uses too). Each reviewer-prompt
        counts once per pair: the votes table allows no second."""
        return pair_results(self.voted_comparisons())


def default_db_path(runs: list[str | Path], fallback: str | Path = "runs") -> Path:
    """`feedback.sqlite` in the folder holding the (first) run folder, so votes live next to the runs."""
    return (Path(runs[0]).resolve().parent if runs else Path(fallback)) / DB_NAME
