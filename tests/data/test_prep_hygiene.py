"""prepare's checks of the source: labels that look like typos, labels outside `data.labels`, and personal
data left unmasked, each in the data card and prepare's summary, on tiny CSVs written here."""

from __future__ import annotations

import pytest

from conftest import make_reviews, write_csv
from domaintune.core.config import load_config
from domaintune.data.card import summarize
from domaintune.data.hygiene import near_miss_labels
from domaintune.data.prepare import read_data_card, read_split, run_prepare


def _prepare(tmp_path, rows, *overrides):
    source = write_csv(tmp_path / "reviews.csv", rows)
    cfg = load_config(None, [f"data.source={source}", f"data.output_dir={tmp_path / 'out'}",
                             "model.name=/nonexistent-model", *overrides])
    return read_data_card(run_prepare(cfg))


def test_rare_label_close_to_a_frequent_one_gets_a_did_you_mean(tmp_path):
    rows = make_reviews(300)  # 100 rows of each of negative, neutral, positive
    rows[0]["rating"], rows[1]["rating"] = "positve", "Neutral"  # a typo and a case slip, once each
    for row in rows[2:12]:
        row["rating"] = "positives"  # close, but 10% of 'positive': a class of its own, not a typo
    card = _prepare(tmp_path, rows)
    found = [(m.label, m.rows, m.suggestion) for m in card.label_near_misses]
    assert sorted(found) == [("Neutral", 1, "neutral"), ("positve", 1, "positive")]
    summary = summarize(card)
    assert "'positve' (1 row; did you mean 'positive'" in summary and "#label-typos" in summary
    assert "did you mean 'positive'" in (tmp_path / "out" / "data_card.md").read_text()


def test_declared_labels_are_never_called_typos():
    counts = {"positive": 300, "positve": 1, "negative": 300, "pos": 1, "very positive": 1, "1": 300, "2": 1}
    assert [(m.label, m.suggestion, m.suggestion_rows) for m in near_miss_labels(counts)] == [
        ("positve", "positive", 300)]
    assert near_miss_labels(counts, declared=["positive", "positve", "negative"]) == []
    # one row beside a label of fewer than 20 rows is not enough evidence of a typo
    assert near_miss_labels({"positive": 19, "positve": 1}) == []
    assert [m.label for m in near_miss_labels({"positive": 20, "positve": 1})] == ["positve"]


def test_labels_outside_data_labels_are_malformed_rows_after_the_map(tmp_path):
    rows = [{**row, "rating": {"negative": "1", "neutral": "3", "positive": "5"}[row["rating"]]}
            for row in make_reviews(60)]
    rows[0]["rating"], rows[1]["rating"] = "4", "9"
    card = _prepare(tmp_path, rows, "data.label_map={'1': negative, '3': neutral, '4': positve, '5': positive}",
                    "data.labels=[negative,positive]")
    # '3' maps to neutral, which data.labels leaves out: 20 malformed rows; '4' maps to a typo of positive
    assert card.bad_rows.by_reason == {"unknown label 'neutral'": 20, "unknown label 'positve'": 1,
                                       "unknown label '9'": 1}
    reasons = {row.reason for row in card.bad_rows.rows}
    assert "unknown label 'positve' (not in data.labels; did you mean 'positive'?)" in reasons
    assert "unknown label '9' (not in data.label_map)" in reasons
    assert card.labels == ["negative", "positive"] and card.label_near_misses == []
    kept = [row["label"] for name in ("train", "val", "test") for row in read_split(tmp_path / "out", name)]
    assert sorted(set(kept)) == ["negative", "positive"] and len(kept) == 38


def test_unmasked_personal_data_is_counted_with_the_keys_that_mask_it(tmp_path):
    rows = make_reviews(60)
    rows[0]["review"] += " write to kim.minji@example.com"
    rows[1]["review"] += " details at https://blog.example.kr/p/1"
    rows[2]["review"] += " shop number 02-123-4567"
    rows[3]["review"] += " call 010-1234-5678 or mail a.b@example.org"
    rows[4]["review"] += " taken 2 times a day, 10 mg"  # numbers that are not a phone
    card = _prepare(tmp_path, rows)
    assert card.unmasked_pii.model_dump() == {
        "rows": 4, "by_kind": {"email": 2, "url": 1, "phone": 2},
        "mask_keys": ["data.clean.mask_email", "data.clean.mask_url", "data.clean.mask_phone"]}
    lines = [line for line in summarize(card).splitlines() if "personal data" in line]
    assert lines == ["warning: 4 rows hold personal data that is not masked (email 2, url 1, phone 2); set "
                     "data.clean.mask_email=true, data.clean.mask_url=true, data.clean.mask_phone=true to mask it; "
                     "see docs/troubleshooting.md#personal-data"]


@pytest.mark.parametrize("masks, expected", [
    (["data.clean.mask_email=true"], {"rows": 2, "by_kind": {"url": 1, "phone": 1}}),
    (["data.clean.mask_email=true", "data.clean.mask_url=true", "data.clean.mask_phone=true"],
     {"rows": 0, "by_kind": {}}),
])
def test_masked_kinds_are_not_counted(tmp_path, masks, expected):
    rows = make_reviews(60)
    rows[0]["review"] += " kim@example.com"
    rows[1]["review"] += " www.example.com/a"
    rows[2]["review"] += " 1588-1234"
    card = _prepare(tmp_path, rows, *masks)
    assert card.unmasked_pii.rows == expected["rows"] and card.unmasked_pii.by_kind == expected["by_kind"]
    assert ("personal data" in summarize(card)) == bool(expected["rows"])
