"""Votes that can be trusted: server-fixed sampling, a reviewer token on every ballot, one vote per
reviewer, prompt and model pair, and exports and win rates that count each ballot once."""

import json
import sqlite3

import pytest
from test_review import SHORT, reviewing_client

from conftest import local_client
from domaintune.cli.main import main
from domaintune.core.errors import DomaintuneError
from domaintune.data.prepare import read_split
from domaintune.serving.app import ServeSettings, create_app
from domaintune.serving.feedback_export import run_feedback_export
from domaintune.serving.feedback_store import AlreadyVoted, FeedbackStore
from domaintune.serving.reviewers import COOKIE, Reviewers

ANN_TOKEN, BOB_TOKEN = "ann-token-0123456789", "bob-token-0123456789"


@pytest.fixture
def app(served_pool, tmp_path):
    return create_app(served_pool, ServeSettings(db_path=tmp_path / "feedback.sqlite", seed=4, review_sampling=SHORT))


def _comparison(client, **body):
    return client.post("/review/api/comparisons", json=body)


def _vote(client, comparison_id, choice="A", **headers):
    return client.post("/review/api/votes", json={"comparison_id": comparison_id, "choice": choice}, headers=headers)


def _votes(app):
    with sqlite3.connect(app.state.store.path) as conn:
        return conn.execute("SELECT reviewer, choice FROM votes ORDER BY id").fetchall()


def test_sampling_is_fixed_by_the_server(app):
    client = reviewing_client(app)
    for chosen in ({"temperature": 0}, {"max_tokens": 1}, {"top_p": 0.1}):
        response = _comparison(client, models=["alpha", "beta"], **chosen)
        assert response.status_code == 400 and next(iter(chosen)) in response.json()["error"]["message"]
    made = _comparison(client, models=["alpha", "beta"], prompt="Is it safe?").json()
    with sqlite3.connect(app.state.store.path) as conn:
        params = json.loads(conn.execute("SELECT params FROM comparisons WHERE id = ?", (made["id"],)).fetchone()[0])
    assert params == {"max_tokens": 6, "temperature": 0.7, "top_p": 0.95}
    assert client.get("/review/api/models").json()["sampling"] == params


def test_the_page_issues_a_reviewer_cookie_and_votes_record_it(app):
    bare = local_client(app)
    assert _comparison(bare, prompt="Is it safe?").status_code == 401
    assert _vote(bare, "f" * 32).json()["error"]["code"] == "reviewer_token_required"
    page = bare.get("/review")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    token = bare.cookies[COOKIE]
    assert "set-cookie" not in bare.get("/review").headers, "a browser keeps its token"
    made = _comparison(bare, models=["alpha", "beta"], prompt="Is it safe?").json()
    assert _vote(bare, made["id"]).status_code == 200
    [(reviewer, _)] = _votes(app)
    assert reviewer.startswith("browser-") and token not in reviewer, "the database holds a digest, not the token"


def test_one_vote_per_reviewer_prompt_and_pair(app):
    ann, bob = reviewing_client(app), reviewing_client(app)
    first = _comparison(ann, models=["alpha", "beta"], prompt="Is ibuprofen safe?").json()
    assert _vote(ann, first["id"], "A").status_code == 200
    # The same prompt (other case and spacing) and pair, either order: no second ballot for ann...
    again = _comparison(ann, models=["beta", "alpha"], prompt="is  IBUPROFEN safe?")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_voted"
    # ...not even on a comparison made behind the page's back.
    store = app.state.store
    sneaked = store.add_comparison("Is ibuprofen safe?", "typed", None, "beta", "alpha", "x", "y", {},
                                   reviewer=_votes(app)[0][0])
    assert _vote(ann, sneaked.id, "B").status_code == 409
    # Another pair, or another reviewer, is another ballot.
    for client, pair in ((ann, ["alpha", "base"]), (bob, ["alpha", "beta"])):
        made = _comparison(client, models=pair, prompt="Is ibuprofen safe?").json()
        assert _vote(client, made["id"]).status_code == 200
    pairs = {(p["model_a"], p["model_b"]): p for p in bob.get("/review/api/results").json()["pairs"]}
    assert (pairs[("alpha", "beta")]["votes"], pairs[("alpha", "beta")]["reviewers"]) == (2, 2)


def test_drawn_prompts_skip_what_the_reviewer_has_voted_on(app, served_pool):
    client = reviewing_client(app)
    val_ids = {str(r["id"]) for r in read_split(served_pool.get("alpha").prepared_dir, "val")}
    voted = set()
    for _ in val_ids:
        view = _comparison(client, models=["alpha", "beta"]).json()
        assert _vote(client, view["id"], "tie").status_code == 200
        voted.add(app.state.store.get_comparison(view["id"]).source_id)
    assert voted == val_ids
    left = _comparison(client, models=["alpha", "beta"])
    assert left.status_code == 409 and left.json()["error"]["code"] == "no_prompts_left"


def test_a_comparison_is_voted_by_its_own_reviewer(app):
    ann, bob = reviewing_client(app), reviewing_client(app)
    made = _comparison(ann, models=["alpha", "beta"], prompt="Is it safe?").json()
    assert _vote(bob, made["id"]).status_code == 403
    assert _vote(ann, made["id"]).status_code == 200


def test_listed_reviewers_vote_under_their_names(served_pool, tmp_path):
    listed = tmp_path / "reviewers.txt"
    listed.write_text(f"# name token\nann {ANN_TOKEN}\n\nbob {BOB_TOKEN}\n")
    app = create_app(served_pool, ServeSettings(db_path=tmp_path / "f.sqlite", reviewers_file=listed,
                                                review_sampling=SHORT))
    client = local_client(app)
    assert "set-cookie" not in client.get("/review").headers, "with a list, tokens come from the list only"
    for token in (None, "not-listed-0123456789", ANN_TOKEN[:-1]):
        headers = {"x-reviewer-token": token} if token else {}
        response = client.post("/review/api/comparisons", json={"prompt": "Is it safe?"}, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_reviewer_token"
    made = client.post("/review/api/comparisons", json={"models": ["alpha", "beta"], "prompt": "Is it safe?"},
                       headers={"x-reviewer-token": ANN_TOKEN}).json()
    assert _vote(client, made["id"], "B", **{"x-reviewer-token": BOB_TOKEN}).status_code == 403
    assert _vote(client, made["id"], "B", **{"x-reviewer-token": ANN_TOKEN}).status_code == 200
    assert _votes(app) == [("ann", "B")]
    assert client.get("/review/api/models").json()["reviewer_list"] is True


@pytest.mark.parametrize("text, words", [
    ("ann\n", r"reviewers.txt:1: expected 'NAME TOKEN'"),
    ("ann short\n", r"reviewers.txt:1: the token must be 16-128"),
    (f"ann {ANN_TOKEN}\nann {BOB_TOKEN}\n", r"reviewers.txt:2: reviewer 'ann' or its token is listed twice"),
    ("# nobody\n", r"reviewers.txt: no reviewers listed"),
])
def test_bad_reviewer_lists_are_named(tmp_path, text, words):
    (tmp_path / "reviewers.txt").write_text(text)
    with pytest.raises(DomaintuneError, match=words):
        Reviewers.from_file(tmp_path / "reviewers.txt")


def test_store_refuses_a_second_ballot_and_test_prompts(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite")
    first = store.add_comparison("p", "val", "7", "alpha", "beta", "a", "b", {}, reviewer="ann")
    store.add_vote(first.id, "A", {}, None, reviewer="ann")
    second = store.add_comparison("P ", "typed", None, "beta", "alpha", "c", "d", {}, reviewer="ann")
    with pytest.raises(AlreadyVoted):
        store.add_vote(second.id, "A", {}, None, reviewer="ann")
    assert store.pair_results()[0]["votes"] == 1, "a reviewer-prompt counts once in the win rate"
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        store.add_comparison("p", "test", "3", "alpha", "beta", "a", "b", {}, reviewer="ann")


def test_export_merges_repeated_ballots_and_counts_reviewers(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite")
    for reviewer, choice in (("ann", "A"), ("bob", "A"), ("cy", "B"), ("cy", "tie")):
        prompt = "other prompt" if choice == "tie" else "p"
        made = store.add_comparison(prompt, "val", "7", "alpha", "beta", "good", "bad", {}, reviewer=reviewer)
        store.add_vote(made.id, choice, {}, None, reviewer=reviewer)
    card = run_feedback_export(store.path, tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out" / "preference.jsonl").read_text().splitlines()]
    assert [(r["chosen"], r["rejected"], r["reviewers"]) for r in rows] == [
        ("good", "bad", ["ann", "bob"]), ("bad", "good", ["cy"])]
    assert all((r["source_split"], r["source_id"]) == ("val", "7") for r in rows)
    assert (card["preference_pairs"], card["duplicate_pairs_merged"]) == (2, 1)
    assert card["reviewers"] == {"cy": {"votes": 2, "decisive": 1}, "ann": {"votes": 1, "decisive": 1},
                                 "bob": {"votes": 1, "decisive": 1}}
    assert card["votes_by_source_split"] == {"val": 4}


V1_SCHEMA = """
CREATE TABLE comparisons (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, prompt TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('test', 'typed')), source_id TEXT, left_model TEXT NOT NULL,
    right_model TEXT NOT NULL, left_answer TEXT NOT NULL, right_answer TEXT NOT NULL, params TEXT NOT NULL);
CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, comparison_id TEXT NOT NULL UNIQUE, created_at TEXT,
    choice TEXT NOT NULL, winner_model TEXT, left_quality INTEGER, left_domain_fit INTEGER, right_quality INTEGER,
    right_domain_fit INTEGER, comment TEXT);
"""


def test_a_database_from_before_reviewer_tokens_is_refused_in_one_line(tmp_path, capsys):
    old = tmp_path / "feedback.sqlite"
    with sqlite3.connect(old) as conn:
        conn.executescript(V1_SCHEMA)
    with pytest.raises(DomaintuneError, match=r"feedback.sqlite: votes database of schema 0, this domaintune "
                                              r"reads schema 2 .* move it aside"):
        FeedbackStore(old)
    assert main(["feedback", "export", "--db", str(old), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "schema 0" in err and not (tmp_path / "o").exists()
