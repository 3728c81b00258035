"""Group-aware splits, near-duplicate leakage, source weights, augmentation."""

import random
from collections import Counter

import pytest

from domaintune.core.config import load_config
from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import DedupConfig
from domaintune.data.augment import augment_rows, delete_and_swap
from domaintune.data.dedup import keyed
from domaintune.data.splits import apply_weights, remove_leaks, split_rows
from domaintune.data.store import Rows


def _homes(splits):
    homes = {}
    for name, members in splits.items():
        for row in members:
            homes.setdefault(row["group"], set()).add(name)
    return homes


def test_group_split_keeps_each_group_in_one_split():
    rows = [{"id": str(i), "text": f"t{i}", "label": "ab"[i % 2], "group": f"drug{i % 10}"} for i in range(200)]
    splits = split_rows(rows, 0.1, 0.2, seed=3, data_format="classification", by_group=True)
    assert all(len(h) == 1 for h in _homes(splits).values())
    assert {k: len(v) for k, v in splits.items()} == {"train": 140, "val": 20, "test": 40}
    assert split_rows(rows, 0.1, 0.2, 3, "classification", True) == splits


def _skewed_groups(seed):
    """60 drugs of 5-60 reviews; each drug's reviews lean to one label, and labels are unbalanced."""
    rng = random.Random(seed)
    rows = []
    for g in range(60):
        lean = rng.choices("pnu", weights=(6, 3, 1))[0]
        for _ in range(rng.randint(5, 60)):
            label = lean if rng.random() < 0.8 else rng.choice("pnu")
            rows.append({"id": str(len(rows)), "text": f"t{len(rows)}", "label": label, "group": f"drug{g}"})
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_group_split_keeps_label_proportions_in_every_split(seed):
    rows = _skewed_groups(seed)
    overall = Counter(r["label"] for r in rows)
    splits = split_rows(rows, 0.1, 0.2, seed=seed, data_format="classification", by_group=True)
    assert all(len(h) == 1 for h in _homes(splits).values())
    for name, fraction in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        members = splits[name]
        assert abs(len(members) / len(rows) - fraction) < 0.03, (name, len(members))
        counts = Counter(r["label"] for r in members)
        for label, total in overall.items():
            share, expected = counts[label] / len(members), total / len(rows)
            assert abs(share - expected) < 0.05, (name, label, round(share, 3), round(expected, 3))


def test_group_split_fills_every_split_when_groups_are_few():
    rows = [{"id": str(i), "text": f"t{i}", "label": "a", "group": f"g{i % 3}"} for i in range(300)]
    splits = split_rows(rows, 0.1, 0.2, seed=0, data_format="classification", by_group=True)
    assert all(len(v) == 100 for v in splits.values())


def test_group_split_too_few_groups_names_counts():
    rows = [{"id": str(i), "text": f"t{i}", "label": "a", "group": "only"} for i in range(50)]
    with pytest.raises(DomaintuneError, match=r"1 groups are too few .* '(train|val|test)' would be empty"):
        split_rows(rows, 0.1, 0.2, seed=0, data_format="classification", by_group=True)


def test_near_leaks_are_reported_and_removed_from_train():
    review = ("my blood pressure dropped within two weeks and I had no headaches or dizziness at all "
              "which is much better than the last medicine my doctor gave me")
    cfg = DedupConfig()
    splits = {
        "train": [{"text": review + " last year"}, {"text": "a completely different story"}],
        "val": [{"text": "validation row"}],
        "test": [{"text": review}],
    }
    report_only = remove_leaks({n: keyed(rows, cfg) for n, rows in splits.items()}, cfg, drop=False)
    assert report_only == {"exact": {"val": 0, "train": 0}, "near": {"val": 0, "train": 1}}
    views = {n: keyed(rows, cfg) for n, rows in splits.items()}
    report = remove_leaks(views, cfg)
    assert report["near"]["train"] == 1
    assert [views["train"].text(i) for i in range(len(views["train"]))] == ["a completely different story"]
    assert views["train"].arrays["bands"].shape[0] == 1


def test_review_split_is_cut_on_request_without_moving_val_or_test():
    rows = [{"id": str(i), "text": f"t{i}", "label": "ab"[i % 2]} for i in range(200)]
    plain = split_rows(rows, 0.1, 0.2, seed=3, data_format="classification")
    cut = split_rows(rows, 0.1, 0.2, seed=3, data_format="classification", review_fraction=0.1)
    assert "review" not in plain and {k: len(v) for k, v in cut.items()} == {
        "train": 120, "val": 20, "test": 40, "review": 20}
    ids = {name: {r["id"] for r in members} for name, members in cut.items()}
    assert sum(map(len, ids.values())) == len(set().union(*ids.values())) == 200
    for name in ("val", "test"):
        assert ids[name] == {r["id"] for r in plain[name]}, f"asking for a review split must not move {name}"
    grouped = [{**r, "group": f"drug{i % 20}"} for i, r in enumerate(rows)]
    by_group = split_rows(grouped, 0.1, 0.2, seed=3, data_format="classification", by_group=True, review_fraction=0.1)
    assert set(by_group) == {"train", "val", "test", "review"} and all(by_group.values())
    assert all(len(h) == 1 for h in _homes(by_group).values())
    with pytest.raises(DomaintuneError, match=r"val_fraction \+ data.test_fraction \+ data.review_fraction"):
        split_rows(rows, 0.4, 0.4, seed=3, data_format="classification", review_fraction=0.2)


def test_review_rows_are_held_out_from_test_and_val_and_train_from_review():
    splits = {
        "train": keyed([{"text": "train only"}, {"text": "Review text"}]),
        "val": keyed([{"text": "val text"}]),
        "test": keyed([{"text": "test text"}]),
        "review": keyed([{"text": "TEST text"}, {"text": "val  text"}, {"text": "review text"}]),
    }
    assert remove_leaks(splits)["exact"] == {"val": 0, "review": 2, "train": 1}
    texts = {name: [rows.text(i) for i in range(len(rows))] for name, rows in splits.items()}
    assert texts["review"] == ["review text"] and texts["train"] == ["train only"]


def _texts_and_ids(rows):
    return [(r["id"], r["text"]) for batch in rows.batches() for r in batch]


def test_weights_sample_and_repeat_per_source():
    rows = [{"id": f"a{i}", "text": "x", "source": "a"} for i in range(100)]
    rows += [{"id": f"b{i}", "text": "y", "source": "b"} for i in range(10)]
    out = [r for batch in apply_weights(Rows.from_list(rows), {"a": 0.5, "b": 2.0}, seed=1).batches() for r in batch]
    assert 35 <= sum(r["source"] == "a" for r in out) <= 65
    assert sum(r["source"] == "b" for r in out) == 20
    assert len({r["id"] for r in out}) == len(out), "repeats get their own ids"
    assert {r["id"] for r in out if r["source"] == "b"} == {f"b{i}" for i in range(10)} | {f"b{i}#2" for i in range(10)}


def test_augmentation_marks_rows_and_is_seeded():
    rows = Rows.from_list([{"id": "1", "text": "this medicine helped my back pain a lot after two weeks",
                            "label": "positive"}])
    cfg = load_config(None, ["data.augment.method=eda", "data.augment.copies=2", "data.augment.probability=0.2"])
    rejected = Counter()
    out = list(augment_rows(rows, cfg, rejected))
    assert out == list(augment_rows(rows, cfg, Counter()))
    assert [r["id"] for r in out] == ["1#aug1", "1#aug2"]
    assert all(r["augmented"] and r["label"] == "positive" and r["text"] != rows.text(0) for r in out)
    assert not rejected
    assert list(augment_rows(rows, load_config(None, []), rejected)) == []
    assert sorted(delete_and_swap("a b c d e f g h", 0.0001, random.Random(0)).split()) == list("abcdefgh")
