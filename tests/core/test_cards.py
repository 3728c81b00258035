"""The typed run and data cards: written and read back unchanged, and a card that does not fit is one line
naming the file, the field and what to do."""

from __future__ import annotations

import json

import pytest

from cards import baseline_card_fields, data_card_fields, fake_data_card, fake_run_card, run_card_fields, write_fake_run
from domaintune.core.data_card import DataCard, read_data_card, write_data_card
from domaintune.core.errors import DomaintuneError
from domaintune.core.run_card import (
    BaselineCard,
    RunCard,
    SweepTrial,
    read_run_card,
    read_training_run_card,
    write_run_card,
)


def test_run_card_round_trip_keeps_every_field(tmp_path):
    card = fake_run_card(task="classification", labels=["negative", "positive"], val_loss=1.25,
                         sweep=SweepTrial(study="s", trial=3, state="pruned", pruned_at_step=4, params={"x": 1}))
    write_run_card(tmp_path, card)
    back = read_run_card(tmp_path)
    assert isinstance(back, RunCard) and back == card
    assert back.train_tokens_per_second == 100.0 and back.sweep.pruned_at_step == 4


def test_unset_optional_fields_are_left_out_and_nullable_required_ones_written(tmp_path):
    write_run_card(tmp_path, fake_run_card())
    written = json.loads((tmp_path / "run_card.json").read_text())
    assert "preference_pairs" not in written and "sweep" not in written, "a LoRA run carries no DPO nulls"
    assert written["val_loss"] is None and "labels" in written, "fields every run has stay, null or not"


def test_dpo_fields_round_trip(tmp_path):
    card = fake_run_card(task="preference", preference_pairs=7, duplicate_pairs_dropped=1,
                         test_leaks_dropped={"test_split": 0, "exact": 1, "near": 0}, beta=0.1)
    write_run_card(tmp_path, card)
    assert read_run_card(tmp_path) == card


def test_baseline_folder_reads_as_a_baseline_card(tmp_path):
    baseline = BaselineCard(**baseline_card_fields())
    write_run_card(tmp_path, baseline)
    assert read_run_card(tmp_path) == baseline
    with pytest.raises(DomaintuneError, match=r"this folder is 'tfidf-logreg', not a training run"):
        read_training_run_card(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("train_tokens_per_second"),
     r"run_card\.json: missing field 'train_tokens_per_second' \(written by an older domaintune\?\); "
     r"train the run again \(`domaintune train`"),
    (lambda c: c.update(foo=1),
     r"run_card\.json: unknown field 'foo' \(written by another domaintune version\?\); train the run again"),
    (lambda c: c.update(steps="many"), r"run_card\.json: field 'steps' holds 'many': Input should be a valid integer"),
])
def test_a_card_that_does_not_fit_is_one_line_naming_file_and_field(tmp_path, change, message):
    fields = run_card_fields()
    change(fields)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run_card.json").write_text(json.dumps(fields))
    with pytest.raises(DomaintuneError, match=message) as raised:
        read_run_card(tmp_path / "run")
    assert str(tmp_path / "run" / "run_card.json") in str(raised.value) and "\n" not in str(raised.value)


def test_not_json_and_missing_folder(tmp_path):
    write_fake_run(tmp_path / "run")
    (tmp_path / "run" / "run_card.json").write_text("{half")
    with pytest.raises(DomaintuneError, match=r"run_card\.json: not valid JSON .*; train the run again"):
        read_run_card(tmp_path / "run")
    with pytest.raises(DomaintuneError, match="run folder not found"):
        read_run_card(tmp_path / "nowhere")


def test_data_card_round_trip_and_nested_field_errors(tmp_path):
    card = fake_data_card(bad_rows={"count": 1, "by_reason": {"empty text": 1},
                                    "rows": [{"source": "a.csv", "where": "line 3", "reason": "empty text"}]},
                          label_near_misses=[{"label": "positve", "rows": 1, "suggestion": "positive",
                                              "suggestion_rows": 300}])
    write_data_card(tmp_path, card)
    back = read_data_card(tmp_path)
    assert isinstance(back, DataCard) and back == card
    assert "sample" not in json.loads((tmp_path / "data_card.json").read_text())["bad_rows"]["rows"][0]

    fields = data_card_fields()
    fields["dedup"]["shingles"] = "word"
    (tmp_path / "data_card.json").write_text(json.dumps(fields))
    with pytest.raises(DomaintuneError, match=r"data_card\.json: unknown field 'dedup\.shingles' .*"
                                              r"run `domaintune prepare` again"):
        read_data_card(tmp_path)
    del fields["dedup"]["shingles"], fields["fingerprint"]
    (tmp_path / "data_card.json").write_text(json.dumps(fields))
    with pytest.raises(DomaintuneError, match=r"missing field 'fingerprint'"):
        read_data_card(tmp_path)
    with pytest.raises(DomaintuneError, match=r"data_card\.json not found: run `domaintune prepare` first"):
        read_data_card(tmp_path / "empty")
