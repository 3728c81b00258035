"""Group-aware splits, near-duplicate leakage, source weights, augmentation."""

import random

import pytest

from domaintune.config import AugmentConfig, DedupConfig
from domaintune.errors import DomaintuneError
from domaintune.prep.augment import augment_rows, delete_and_swap
from domaintune.prep.dedup import signatures
from domaintune.prep.splits import apply_weights, remove_leaks, split_rows


def test_group_split_keeps_each_group_in_one_split():
    rows = [{"id": str(i), "text": f"t{i}", "label": "ab"[i % 2], "group": f"drug{i % 10}"} for i in range(200)]
    splits = split_rows(rows, 0.1, 0.2, seed=3, data_format="classification", by_group=True)
    homes = {}
    for name, members in splits.items():
        for row in members:
            homes.setdefault(row["group"], set()).add(name)
    assert all(len(h) == 1 for h in homes.values())
    assert {k: len(v) for k, v in splits.items()} == {"train": 140, "val": 20, "test": 40}
    assert split_rows(rows, 0.1, 0.2, 3, "classification", True) == splits


def test_group_split_too_few_groups_names_counts():
    rows = [{"id": str(i), "text": f"t{i}", "label": "a", "group": "only"} for i in range(50)]
    with pytest.raises(DomaintuneError, match=r"1 groups are too few .* 'train' would be empty"):
        split_rows(rows, 0.1, 0.2, seed=0, data_format="classification", by_group=True)


def test_near_leaks_are_reported_and_removed_from_train():
    review = ("my blood pressure dropped within two weeks and I had no headaches or dizziness at all "
              "which is much better than the last medicine my doctor gave me")
    splits = {
        "train": [{"text": review + " last year"}, {"text": "a completely different story"}],
        "val": [{"text": "validation row"}],
        "test": [{"text": review}],
    }
    cfg = DedupConfig()
    sigs = {n: signatures([r["text"] for r in rows], cfg) for n, rows in splits.items()}
    report_only = remove_leaks({k: list(v) for k, v in splits.items()}, dict(sigs), cfg, drop=False)
    assert report_only == {"exact": {"val": 0, "train": 0}, "near": {"val": 0, "train": 1}}
    report = remove_leaks(splits, sigs, cfg)
    assert report["near"]["train"] == 1
    assert splits["train"] == [{"text": "a completely different story"}] and len(sigs["train"]) == 1


def test_weights_sample_and_repeat_per_source():
    rows = [{"id": f"a{i}", "text": "x", "source": "a"} for i in range(100)]
    rows += [{"id": f"b{i}", "text": "y", "source": "b"} for i in range(10)]
    out = apply_weights(rows, {"a": 0.5, "b": 2.0}, seed=1)
    assert 35 <= sum(r["source"] == "a" for r in out) <= 65
    assert sum(r["source"] == "b" for r in out) == 20
    assert len({r["id"] for r in out}) == len(out), "repeats get their own ids"


def test_augmentation_marks_rows_and_is_seeded():
    rows = [{"id": "1", "text": "this medicine helped my back pain a lot after two weeks", "label": "positive"}]
    cfg = AugmentConfig(method="eda", copies=2, probability=0.2)
    out = augment_rows(rows, cfg, "classification", seed=0)
    assert out == augment_rows(rows, cfg, "classification", seed=0)
    assert [r["id"] for r in out] == ["1#aug1", "1#aug2"]
    assert all(r["augmented"] and r["label"] == "positive" and r["text"] != rows[0]["text"] for r in out)
    assert augment_rows(rows, AugmentConfig(), "classification", 0) == []
    assert sorted(delete_and_swap("a b c d e f g h", 0.0001, random.Random(0)).split()) == list("abcdefgh")
