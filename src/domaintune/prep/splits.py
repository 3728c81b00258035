"""Seeded splits (stratified by label, by group, or both), leakage removal between splits, source weights.

Splits are computed on row positions and label/group codes only, never on the documents.
"""

from __future__ import annotations

import random

import numpy as np

from ..config import DedupConfig
from ..errors import DomaintuneError
from .dedup import exact_matches, near_matches
from .store import Rows

SPLITS = ("train", "val", "test")
Codes = tuple[np.ndarray, list[str]]  # one code per row, and the value each code stands for


def _too_few(n: int, name: str, val_fraction: float, test_fraction: float, unit: str = "rows") -> DomaintuneError:
    return DomaintuneError(
        f"{n} {unit} are too few for the requested split (train/val/test = "
        f"{1 - val_fraction - test_fraction:.2f}/{val_fraction:.2f}/{test_fraction:.2f}): "
        f"'{name}' would be empty; add data or raise data.{name}_fraction; see docs/troubleshooting.md#too-few-rows"
    )


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int, labels: Codes | None = None,
    groups: Codes | None = None,
) -> dict[str, np.ndarray]:
    """Seeded split of rows 0..n-1. With `labels` each label is split in proportion (rare labels reach
    every split); with `groups` whole groups are assigned, so no group straddles two splits, and the
    label proportions are kept per split as well as whole groups allow."""
    if val_fraction + test_fraction >= 1.0:
        raise DomaintuneError(
            f"data.val_fraction + data.test_fraction must be below 1 (got {val_fraction + test_fraction})"
        )
    rng = random.Random(seed)
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    label_codes = labels[0] if labels is not None else np.zeros(n, np.int64)
    if groups is not None:
        splits = _split_groups(groups, label_codes, fractions, rng)
    else:
        splits = {name: [] for name in SPLITS}
        names = labels[1] if labels is not None else [""]
        for code in sorted(range(len(names)), key=names.__getitem__):
            members = np.flatnonzero(label_codes == code)
            rng.shuffle(members)
            n_test = round(len(members) * test_fraction)
            n_val = round(len(members) * val_fraction)
            splits["test"].append(members[:n_test])
            splits["val"].append(members[n_test:n_test + n_val])
            splits["train"].append(members[n_test + n_val:])
        splits = {name: np.concatenate(parts) if parts else np.zeros(0, np.int64) for name, parts in splits.items()}
    for name in SPLITS:
        if (name == "train" or fractions[name] > 0) and not len(splits[name]):
            count, unit = (len(groups[1]), "groups") if groups is not None else (n, "rows")
            raise _too_few(count, name, val_fraction, test_fraction, unit)
    for members in splits.values():
        rng.shuffle(members)
    return splits


def _split_groups(groups: Codes, labels: np.ndarray, fractions: dict[str, float], rng: random.Random) -> dict:
    """Groups, largest first, each to the split whose label counts it brings closest to their targets:
    the least growth of sum over labels of (rows - target)^2 / target, target = fraction x label rows.

    Plain size-filling (or scikit-learn's StratifiedGroupKFold, which makes equal folds) lets one split
    collect the groups of one label. A split still empty when only as many groups remain as there are
    empty splits takes the next one, so every split gets a group whenever there are enough.
    """
    codes, names = groups
    wanted = [s for s in SPLITS if fractions[s] > 0]
    per_group = np.zeros((len(names), int(labels.max(initial=0)) + 1))
    np.add.at(per_group, (codes, labels), 1)
    target = np.array([fractions[s] * per_group.sum(axis=0) for s in wanted])
    target[target == 0] = 1e-9  # a label absent from the data: any row of it is off target
    have = np.zeros_like(target)
    order = sorted(range(len(names)), key=names.__getitem__)
    rng.shuffle(order)  # ties in size are broken by the seed
    order.sort(key=lambda g: -per_group[g].sum())
    home = np.zeros(len(names), np.int64)
    empty = set(range(len(wanted)))
    for position, g in enumerate(order):
        counts = per_group[g]
        choices = sorted(empty) if len(order) - position <= len(empty) else range(len(wanted))
        growth = [float(np.sum(counts * (counts - 2 * (target[s] - have[s])) / target[s])) for s in choices]
        best = list(choices)[int(np.argmin(growth))]
        home[g] = best
        have[best] += counts
        empty.discard(best)
    assigned = home[codes]
    splits = {name: np.zeros(0, np.int64) for name in SPLITS}
    for s, name in enumerate(wanted):
        splits[name] = np.flatnonzero(assigned == s)
    return splits


def _codes(values: list) -> Codes:
    names = sorted(set(values))
    index = {v: i for i, v in enumerate(names)}
    return np.array([index[v] for v in values], np.int64), names


def split_rows(
    rows: list[dict], val_fraction: float, test_fraction: float, seed: int, data_format: str,
    by_group: bool = False,
) -> dict[str, list[dict]]:
    """`split_indices` on rows held in memory (tests, notebooks): labels for classification, and
    `row["group"]` with `by_group`."""
    labels = _codes([r["label"] for r in rows]) if data_format == "classification" else None
    groups = _codes([r["group"] for r in rows]) if by_group else None
    splits = split_indices(len(rows), val_fraction, test_fraction, seed, labels, groups)
    return {name: [rows[i] for i in members] for name, members in splits.items()}


def remove_leaks(splits: dict[str, Rows], dedup: DedupConfig | None = None, drop: bool = True) -> dict[str, dict]:
    """Find rows of train (and val) that repeat a row of a later split, exactly or (with `dedup` and
    band keys) nearly.

    Test is held out from val and train, val from train. Counts are per split and kind; with `drop` the
    rows are removed.
    """
    report = {"exact": {}, "near": {}}
    held: list[Rows] = []
    for name in ("test", "val", "train"):
        rows = splits[name]
        exact = np.zeros(len(rows), bool)
        near = np.zeros(len(rows), bool)
        for other in held:
            exact |= exact_matches(rows, other)
            if dedup is not None and "bands" in rows.arrays:
                near |= near_matches(rows, other, dedup)
        near &= ~exact
        if name != "test":
            report["exact"][name] = int(exact.sum())
            report["near"][name] = int(near.sum())
        if drop:
            splits[name] = rows = rows.select(~(exact | near))
        held.append(rows)
    return report


def apply_weights(rows: Rows, weights: dict[str, float], seed: int) -> Rows:
    """Scale each source's training rows by its weight: the integer part repeats rows, the fraction
    keeps a seeded sample of them once more (weight 0.5 keeps half; 2.5 gives 2 copies plus half).
    Copies carry `copy` = 1, 2, ... (their ids get `#2`, `#3`, ...)."""
    if all(w == 1.0 for w in weights.values()):
        return rows
    rng = random.Random(seed)
    codes, sources = rows.codes("source")
    weight = np.array([weights.get(s, 1.0) for s in sources])[codes] if len(rows) else np.zeros(0)
    draws = np.array([rng.random() for _ in range(len(rows))])
    copies = np.floor(weight).astype(np.int64) + (draws < weight - np.floor(weight))
    index = np.repeat(np.arange(len(rows)), copies)
    copy = np.arange(len(index)) - np.repeat(np.cumsum(copies) - copies, copies)
    return rows.select(index).with_arrays(copy=copy)
