"""Win rates read from the review database below serving/, for compare's report."""

import sqlite3

import pytest

from domaintune.core.errors import DomaintuneError
from domaintune.evaluation.win_rates import pair_results, read_votes
from domaintune.serving.feedback_store import FeedbackStore


def _vote(store, left, right, choice, reviewer, prompt):
    c = store.add_comparison(prompt, "typed", None, left, right, "x", "y", {}, reviewer=reviewer)
    store.add_vote(c.id, choice, {}, None, reviewer=reviewer)


def test_votes_read_below_serving_give_the_review_pages_win_rates(tmp_path):
    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path)
    for i, choice in enumerate(["A", "A", "B", "tie", "A"]):
        _vote(store, "lora", "base", choice, f"r{i % 2}", f"prompt {i}")
    [pair] = pair_results(read_votes(path))
    # model_a is "base" (pairs are kept in name order): lora (left) won three, base one, one tie.
    assert (pair["model_a"], pair["wins_a"], pair["wins_b"], pair["ties"], pair["reviewers"]) == ("base", 1, 3, 1, 2)
    assert pair["win_rate_a"] == 0.25 and pair == store.pair_results()[0]
    # Wilson 95% for 1 of 4 is 1 - (0.9544, 0.3006) of 3 of 4: 0.0456 to 0.6994.
    assert pair["ci_low"] == pytest.approx(0.0456, abs=1e-4) and pair["ci_high"] == pytest.approx(0.6994, abs=1e-4)


def test_a_pair_with_only_ties_has_no_rate(tmp_path):
    [pair] = pair_results([{"model_a": "a", "model_b": "b", "choice": "tie", "winner_model": None, "reviewer": "r"}])
    assert pair["votes"] == 1 and pair["win_rate_a"] is None and pair["ci_low"] is None


def test_what_is_no_votes_database_is_one_line(tmp_path):
    with pytest.raises(DomaintuneError, match=r"missing.sqlite: feedback database not found"):
        read_votes(tmp_path / "missing.sqlite")
    (tmp_path / "text.sqlite").write_text("not sqlite at all, just some text " * 10)
    with pytest.raises(DomaintuneError, match=r"text.sqlite: not a feedback database"):
        read_votes(tmp_path / "text.sqlite")
    with sqlite3.connect(tmp_path / "old.sqlite") as conn:
        conn.execute("CREATE TABLE votes (id INTEGER)")
    with pytest.raises(DomaintuneError, match=r"old.sqlite: votes database of schema 0, this domaintune reads 2"):
        read_votes(tmp_path / "old.sqlite")
