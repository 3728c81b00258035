"""The review API: blind comparisons, votes in SQLite, win rates with Wilson intervals, and the export.
Reviewer tokens and one ballot per reviewer, prompt and pair: test_review_ballots.py."""

import json
import sqlite3

import pytest

from cli_errors import one_error_line
from conftest import local_client
from domaintune.core.errors import DomaintuneError
from domaintune.data.prepare import read_split
from domaintune.serving.app import ServeSettings, create_app
from domaintune.serving.feedback_export import run_feedback_export
from domaintune.serving.feedback_store import FeedbackStore
from domaintune.serving.review import ReviewSampling

SHORT = ReviewSampling(max_tokens=6)  # the server's sampling for every comparison; short answers keep tests fast


def reviewing_client(app):
    """A client holding the reviewer cookie that opening /review gives a browser."""
    client = local_client(app)
    assert client.get("/review").status_code == 200
    return client


@pytest.fixture
def client(served_pool, tmp_path):
    return reviewing_client(create_app(served_pool, ServeSettings(db_path=tmp_path / "feedback.sqlite", seed=3,
                                                                  review_sampling=SHORT)))


def _new(client, **body):
    response = client.post("/review/api/comparisons", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _rows(client, sql, *args):
    with sqlite3.connect(client.app.state.store.path) as conn:
        return conn.execute(sql, args).fetchall()


BLIND_KEYS = {"id", "prompt", "source", "answers", "voted"}


def test_comparison_is_blind_and_its_order_is_recorded(client):
    seen = set()
    for _ in range(8):
        view = _new(client, models=["alpha", "base"])
        # The exact keys: a model's name under any new key would unblind the vote.
        assert set(view) == BLIND_KEYS and set(view["answers"]) == {"A", "B"} and view["voted"] is False
        assert client.get(f"/review/api/comparisons/{view['id']}").json() == view
        left, right, la, ra = _rows(client, "SELECT left_model, right_model, left_answer, right_answer "
                                            "FROM comparisons WHERE id = ?", view["id"])[0]
        assert {left, right} == {"alpha", "base"}
        assert (la, ra) == (view["answers"]["A"], view["answers"]["B"])
        seen.add(left)
    assert seen == {"alpha", "base"}, "the left side must be drawn at random"


def test_prompts_come_from_the_val_split_never_test_or_are_typed(client, served_pool):
    prepared = served_pool.get("alpha").prepared_dir
    val, test = ({str(r["id"]): r["text"] for r in read_split(prepared, name)} for name in ("val", "test"))
    for _ in range(4):
        drawn = _new(client)
        source_id = _rows(client, "SELECT source_id FROM comparisons WHERE id = ?", drawn["id"])[0][0]
        assert drawn["source"] == "val" and source_id in val and source_id not in test
        assert drawn["prompt"] == f"Classify the sentiment.\n\n{val[source_id]}"
    assert client.get("/review/api/models").json()["prompt_split"] == "val"
    typed = _new(client, prompt="  Is ibuprofen safe with coffee?  ")
    assert typed["source"] == "typed" and typed["prompt"] == "Is ibuprofen safe with coffee?"
    assert _rows(client, "SELECT source_id FROM comparisons WHERE id = ?", typed["id"])[0][0] is None


def test_vote_lands_with_the_right_model_on_the_right_side(client):
    view = _new(client, models=["beta", "alpha"])
    vote = client.post("/review/api/votes", json={
        "comparison_id": view["id"], "choice": "B", "comment": "B names the sentiment",
        "ratings": {"A": {"quality": 2}, "B": {"quality": 5, "domain_fit": 4}},
    })
    assert vote.status_code == 200, vote.text
    revealed = vote.json()["models"]
    row = _rows(client, "SELECT choice, winner_model, left_quality, left_domain_fit, right_quality, "
                        "right_domain_fit, comment FROM votes WHERE comparison_id = ?", view["id"])
    assert row == [("B", revealed["B"], 2, None, 5, 4, "B names the sentiment")]
    assert client.get(f"/review/api/comparisons/{view['id']}").json()["models"] == revealed


def test_bad_votes_are_rejected(client):
    view = _new(client, models=["alpha", "beta"])
    post = lambda body: client.post("/review/api/votes", json=body)  # noqa: E731
    assert post({"comparison_id": "f" * 32, "choice": "A"}).status_code == 404
    assert post({"comparison_id": view["id"], "choice": "C"}).status_code == 400
    assert post({"comparison_id": view["id"], "choice": "A", "ratings": {"A": {"quality": 6}}}).status_code == 400
    assert post({"comparison_id": view["id"], "choice": "A", "ratings": {"C": {"quality": 3}}}).status_code == 400
    assert post({"comparison_id": view["id"], "choice": "A"}).status_code == 200
    assert post({"comparison_id": view["id"], "choice": "B"}).status_code == 409
    assert _rows(client, "SELECT COUNT(*) FROM votes")[0][0] == 1
    assert client.get("/review/api/comparisons/nope").status_code == 404


def test_comparison_requests_are_checked(client):
    post = lambda body: client.post("/review/api/comparisons", json=body)  # noqa: E731
    assert post({"models": ["alpha", "alpha"]}).status_code == 400
    assert post({"models": ["alpha", "ghost"]}).status_code == 404
    assert post({"prompt": "x", "path": "/etc/passwd"}).status_code == 400, "unknown fields are refused"


def test_sql_in_text_is_stored_as_text(client):
    nasty = "x'); DROP TABLE votes; --"
    view = _new(client, prompt=nasty, models=["alpha", "beta"])
    client.post("/review/api/votes", json={"comparison_id": view["id"], "choice": "tie", "comment": nasty})
    assert _rows(client, "SELECT comment FROM votes")[0][0] == nasty


def test_database_is_in_wal_mode(client):
    assert _rows(client, "PRAGMA journal_mode")[0][0] == "wal"


def _store_with_votes(path, votes, reviewer="ann"):
    store = FeedbackStore(path)
    for i, (left, right, choice, ratings) in enumerate(votes):
        c = store.add_comparison(f"prompt {i}", "typed", None, left, right, f"{left} says {i}", f"{right} says {i}",
                                 {}, reviewer=reviewer)
        store.add_vote(c.id, choice, ratings, None, reviewer=reviewer)
    return store


def test_win_rates_with_wilson_intervals(tmp_path):
    # base vs alpha: alpha wins 3 (twice on the left, once on the right), base wins 1, one tie.
    store = _store_with_votes(tmp_path / "f.sqlite", [
        ("alpha", "base", "A", {}), ("alpha", "base", "A", {}), ("base", "alpha", "B", {}),
        ("base", "alpha", "A", {}), ("alpha", "base", "tie", {}), ("alpha", "beta", "B", {}),
    ])
    pairs = {(p["model_a"], p["model_b"]): p for p in store.pair_results()}
    ab = pairs[("alpha", "base")]
    assert (ab["wins_a"], ab["wins_b"], ab["ties"], ab["votes"]) == (3, 1, 1, 5)
    assert ab["win_rate_a"] == 0.75
    # Wilson 95% for 3 of 4: 0.3006 to 0.9544 (Wilson 1927; e.g. R's binom::binom.wilson).
    assert ab["ci_low"] == pytest.approx(0.3006, abs=1e-4) and ab["ci_high"] == pytest.approx(0.9544, abs=1e-4)
    assert pairs[("alpha", "beta")]["wins_b"] == 1


def test_results_endpoint_and_pages(client):
    view = _new(client, models=["alpha", "beta"])
    client.post("/review/api/votes", json={"comparison_id": view["id"], "choice": "A"})
    pairs = client.get("/review/api/results").json()["pairs"]
    assert len(pairs) == 1 and pairs[0]["votes"] == 1
    for page in ("/review", "/results"):
        response = client.get(page)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "innerHTML" not in response.text, "model output must only ever be set as text"
    assert "innerHTML" not in client.get("/assets/common.js").text


def test_export_writes_preference_and_sft_data(tmp_path):
    store = _store_with_votes(tmp_path / "f.sqlite", [
        ("alpha", "base", "B", {"right_quality": 5, "right_domain_fit": 4, "left_quality": 4}),
        ("beta", "alpha", "A", {"left_quality": 3}),
        ("alpha", "beta", "tie", {"left_quality": 5}),
    ])
    card = run_feedback_export(store.path, tmp_path / "out")
    pref = [json.loads(line) for line in (tmp_path / "out" / "preference.jsonl").read_text().splitlines()]
    where = {"source_split": "typed", "source_id": None, "reviewers": ["ann"]}
    assert pref == [
        {"prompt": "prompt 0", "chosen": "base says 0", "rejected": "alpha says 0", "chosen_model": "base",
         "rejected_model": "alpha", "comparison_id": pref[0]["comparison_id"], **where},
        {"prompt": "prompt 1", "chosen": "beta says 1", "rejected": "alpha says 1", "chosen_model": "beta",
         "rejected_model": "alpha", "comparison_id": pref[1]["comparison_id"], **where},
    ]
    sft = [json.loads(line) for line in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["completion"]) for r in sft] == [
        ("prompt 0", "alpha says 0"), ("prompt 0", "base says 0"), ("prompt 2", "alpha says 2")]
    assert all((r["source_split"], r["source_id"], r["reviewer"]) == ("typed", None, "ann") for r in sft)
    assert card["votes"] == 3 and card["ties"] == 1 and card["preference_pairs"] == 2 and card["sft_rows"] == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".domaintune-output.json", "export_card.json", "preference.jsonl", "sft.jsonl"]


def test_export_of_a_missing_database_names_it(tmp_path):
    with pytest.raises(DomaintuneError, match="votes database not found"):
        run_feedback_export(tmp_path / "none.sqlite", tmp_path / "out")
    assert not (tmp_path / "none.sqlite").exists() and not (tmp_path / "out").exists()


def test_feedback_cli(tmp_path, capsys):
    from domaintune.cli.main import main

    _store_with_votes(tmp_path / "f.sqlite", [("alpha", "base", "A", {})])
    assert main(["feedback", "export", "--db", str(tmp_path / "f.sqlite"), "--out", str(tmp_path / "o")]) == 0
    assert "1 preference pairs" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["feedback", "import"]) == 2
    assert one_error_line(capsys) == ("domaintune feedback: error: usage: domaintune feedback export [--db DB] "
                                      "[--out FOLDER]")


def test_random_pair_when_models_unset(client):
    picked = {tuple(sorted(_rows(client, "SELECT left_model, right_model FROM comparisons WHERE id = ?",
                                 _new(client)["id"])[0])) for _ in range(6)}
    assert all(a != b for a, b in picked) and len(picked) >= 2


def test_long_review_documents_are_cut_to_the_prompt_limit(served_pool, tmp_path):
    limit = 45
    client = reviewing_client(create_app(served_pool, ServeSettings(
        db_path=tmp_path / "f.sqlite", max_prompt_tokens=limit, seed=1, review_sampling=SHORT)))
    tokenizer = served_pool.get("alpha").tokenizer
    count = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    budget = limit - count("Classify the sentiment.") - 32
    originals = {str(r["id"]): r["text"] for r in read_split(served_pool.get("alpha").prepared_dir, "val")}
    cut = 0
    for _ in range(5):
        view = _new(client, models=["alpha", "beta"])
        source_id = _rows(client, "SELECT source_id FROM comparisons WHERE id = ?", view["id"])[0][0]
        document = view["prompt"].split("\n\n", 1)[1]
        assert count(document) <= budget
        cut += count(originals[source_id]) > budget
    assert cut, "the limit must be tight enough to cut some document"
