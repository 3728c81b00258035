import json

import pytest

from conftest import make_reviews, write_csv
from domaintune.core.config import load_config
from domaintune.core.errors import DomaintuneError
from domaintune.data.dedup import keyed
from domaintune.data.prepare import read_data_card, read_split, remove_leaks, run_prepare, split_rows
from similarity import similar_pairs


def _cfg(tmp_path, source, *extra):
    return load_config(None, [f"data.source={source}", f"data.output_dir={tmp_path / 'out'}", *extra])


def test_prepare_cleans_dedups_and_writes_card(tmp_path):
    rows = make_reviews(30)
    rows += [dict(rows[0]), {"review": "   ", "rating": "positive", "drugName": "x"},
             {"review": "no label", "rating": "", "drugName": "x"}]
    rows.append({**rows[1], "review": rows[1]["review"].upper()})  # same text, other case
    out = run_prepare(_cfg(tmp_path, write_csv(tmp_path / "r.csv", rows), "data.test_fraction=0.2"))

    card = json.loads((out / "data_card.json").read_text())
    steps = {s["step"]: s for s in card["steps"]}
    assert steps["read"]["rows_in"] == 34 and steps["read"]["rows_out"] == 32
    assert steps["read"]["removed"] == {"empty text": 1, "missing label": 1}
    assert steps["exact_dedup"]["removed"] == {"exact_duplicate": 2}
    assert steps["near_dedup"]["rows_out"] == 30
    assert [(r["where"], r["reason"]) for r in card["bad_rows"]["rows"]] == [
        ("line 33", "empty text"), ("line 34", "missing label")]
    assert sum(card["rows"].values()) == 30
    assert card["labels"] == ["negative", "neutral", "positive"]
    assert (out / "data_card.md").is_file() and (out / "config.yaml").is_file()
    train = read_split(out, "train")
    assert all("&amp;" not in r["text"] for r in train), "HTML entities must be unescaped"
    assert {r["id"].split(":")[0] for r in train} == {"r.csv"}


def test_split_is_seeded_stratified_and_disjoint():
    rows = [{"id": str(i), "text": f"t{i}", "label": "ab"[i % 2]} for i in range(100)]
    a = split_rows(rows, 0.1, 0.2, seed=1, data_format="classification")
    b = split_rows(rows, 0.1, 0.2, seed=1, data_format="classification")
    c = split_rows(rows, 0.1, 0.2, seed=2, data_format="classification")
    assert a == b and a != c
    assert {k: len(v) for k, v in a.items()} == {"train": 70, "val": 10, "test": 20}
    assert sum(r["label"] == "a" for r in a["test"]) == 10
    ids = [r["id"] for split in a.values() for r in split]
    assert len(ids) == len(set(ids)) == 100


def test_leaked_rows_are_removed_from_train():
    splits = {
        "train": keyed([{"text": "Same text"}, {"text": "unique"}]),
        "val": keyed([{"text": "other"}]),
        "test": keyed([{"text": "same  TEXT"}]),
    }
    assert remove_leaks(splits) == {"exact": {"val": 0, "train": 1}, "near": {"val": 0, "train": 0}}
    assert [r["text"] for b in splits["train"].batches() for r in b] == ["unique"]


def test_review_split_is_written_on_request(tmp_path):
    csv = write_csv(tmp_path / "r.csv", make_reviews(60))
    plain = run_prepare(_cfg(tmp_path, csv))
    assert not (plain / "review.jsonl").exists(), "no review split unless asked for"
    out = run_prepare(load_config(None, [f"data.source={csv}", f"data.output_dir={tmp_path / 'cut'}",
                                         "data.review_fraction=0.1"]))
    ids = {name: {r["id"] for r in read_split(out, name)} for name in ("train", "val", "test", "review")}
    assert ids["review"] and sum(map(len, ids.values())) == len(set().union(*ids.values()))
    card = read_data_card(out)
    assert card.rows["review"] == len(ids["review"]) and card.leaked_rows_removed["review"] == 0
    assert "| review |" in (out / "data_card.md").read_text()


def test_test_file_is_kept_and_train_is_split(tmp_path):
    train = write_csv(tmp_path / "train.tsv", make_reviews(40), delimiter="\t")
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in make_reviews(9, seed=5)) + "{broken\n")
    out = run_prepare(_cfg(tmp_path, train, f"data.test_source={test}", "data.val_fraction=0.25"))
    assert len(read_split(out, "test")) == 9
    assert len(read_split(out, "val")) == 10
    steps = {s["step"]: s for s in json.loads((out / "data_card.json").read_text())["steps"]}
    assert steps["read"]["removed"] == {}, "the test file's bad line is not charged to the pool"
    assert steps["read_test_file"]["rows_in"] == 10 and steps["read_test_file"]["removed"] == {"invalid JSON": 1}


def test_missing_column_names_file_and_column(tmp_path):
    path = write_csv(tmp_path / "r.csv", [{"body": "x", "rating": "positive"}])
    expected = r"r\.csv: no column 'review' \(columns: body, rating\); set data\.text_column"
    with pytest.raises(DomaintuneError, match=expected):
        run_prepare(_cfg(tmp_path, path))


def test_missing_file(tmp_path):
    with pytest.raises(DomaintuneError, match="data file not found: .*nope.csv"):
        run_prepare(_cfg(tmp_path, tmp_path / "nope.csv"))


def test_empty_after_cleaning(tmp_path):
    path = write_csv(tmp_path / "r.csv", [{"review": "&nbsp; ", "rating": "positive"}] * 3)
    with pytest.raises(DomaintuneError, match=r"r\.csv: no usable rows \(\{'empty text': 3\}\)"):
        run_prepare(_cfg(tmp_path, path))


def test_too_small_for_split_gives_counts_and_writes_nothing(tmp_path):
    path = write_csv(tmp_path / "r.csv", make_reviews(3))
    with pytest.raises(DomaintuneError, match=r"3 rows are too few for the requested split .* 'val' would be empty"):
        run_prepare(_cfg(tmp_path, path, "data.val_fraction=0.1", "data.test_fraction=0.1"))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*")), "no staging folder may be left behind"


def test_failed_prepare_keeps_previous_output(tmp_path):
    good = run_prepare(_cfg(tmp_path, write_csv(tmp_path / "r.csv", make_reviews(30))))
    before = (good / "train.jsonl").read_text()
    with pytest.raises(DomaintuneError):
        run_prepare(_cfg(tmp_path, write_csv(tmp_path / "bad.csv", [{"x": "1"}])))
    assert (good / "train.jsonl").read_text() == before


def test_text_format_needs_no_label(tmp_path):
    path = write_csv(tmp_path / "d.csv", [{"body": f"document {i}"} for i in range(20)])
    out = run_prepare(_cfg(tmp_path, path, "data.format=text", "data.text_column=body", "data.label_column=null"))
    card = json.loads((out / "data_card.json").read_text())
    assert card["labels"] is None and sum(card["rows"].values()) == 20


def test_named_drugreviews_dataset(tmp_path):
    out = run_prepare(_cfg(tmp_path, "drugreviews"))
    card = json.loads((out / "data_card.json").read_text())
    assert card["sources"]["drugreviews/drugsComTrain.tsv"]["records"] == 600
    assert card["rows"]["test"] == 379, "the shipped test file is kept as it is"
    assert card["leaked_rows_removed"]["train"] >= 1, "one train review also appears in the test file"
    texts = [r["text"] for r in read_split(out, "train")]
    held_in, test = texts + [r["text"] for r in read_split(out, "val")], [r["text"] for r in read_split(out, "test")]
    assert not similar_pairs(held_in, test, card["dedup"]["threshold"]), "written splits share no review"
    assert not any("&#039;" in t or t.startswith('"') for t in texts)
