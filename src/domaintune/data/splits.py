"""Seeded splits (stratified by label, by group, or both), leakage removal between splits, source weights.

Splits are computed on row positions and label/group codes only, never on the documents.
"""

from __future__ import annotations

import random

import numpy as np

from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import DedupConfig
from domaintune.data.dedup import exact_matches, near_matches
from domaintune.data.store import Rows

SPLITS = ("train", "val", "test")
# Cut only on request (data.review_fraction): prompts for the review page, whose votes become training
# data, so it is held out from test and val like val is from test.
REVIEW = "review"
HOLD_OUT_ORDER = ("test", "val", REVIEW, "train")  # each split is held out from the ones before it
Codes = tuple[np.ndarray, list[str]]  # one code per row, and the value each code stands for


def _too_few(n: int, name: str, fractions: dict[str, float], unit: str = "rows") -> DomaintuneError:
    # train has no fraction of its own: it gets what the others leave, so they are what to lower.
    fix = "lower data.val_fraction / data.test_fraction" if name == "train" else f"raise data.{name}_fraction"
    return DomaintuneError(
        f"{n} {unit} are too few for the requested split ({'/'.join(fractions)} = "
        f"{'/'.join(f'{f:.2f}' for f in fractions.values())}): "
        f"'{name}' would be empty; add data or {fix}; see docs/troubleshooting.md#too-few-rows"
    )


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int, labels: Codes | None = None,
    groups: Codes | None = None, review_fraction: float = 0.0,
) -> dict[str, np.ndarray]:
    """Seeded split of rows 0..n-1. With `labels` each label is split in proportion (rare labels reach
    every split); with `groups` whole groups are assigned, so no group straddles two splits, and the
    label proportions are kept per split as well as whole groups allow. A `review` split is cut only
    when `review_fraction` is above 0; without it the split is exactly what it was before."""
    if val_fraction + test_fraction + review_fraction >= 1.0:
        what = "data.val_fraction + data.test_fraction" + (" + data.review_fraction" if review_fraction else "")
        raise DomaintuneError(f"{what} must be below 1 (got {val_fraction + test_fraction + review_fraction})")
    rng = random.Random(seed)
    fractions = {"train": 1.0 - val_fraction - test_fraction - review_fraction, "val": val_fraction,
                 "test": test_fraction}
    if review_fraction:
        fractions[REVIEW] = review_fraction
    label_codes = labels[0] if labels is not None else np.zeros(n, np.int64)
    if groups is not None:
        splits = _split_groups(groups, label_codes, fractions, rng)
    else:
        splits = {name: [] for name in fractions}
        names = labels[1] if labels is not None else [""]
        for code in sorted(range(len(names)), key=names.__getitem__):
            members = np.flatnonzero(label_codes == code)
            rng.shuffle(members)
            start = 0
            for name in ("test", "val", REVIEW):  # the review cut comes last: the others are as before
                if name in fractions:
                    size = round(len(members) * fractions[name])
                    splits[name].append(members[start:start + size])
                    start += size
            splits["train"].append(members[start:])
        splits = {name: np.concatenate(parts) if parts else np.zeros(0, np.int64) for name, parts in splits.items()}
    for name in fractions:
        if (name == "train" or fractions[name] > 0) and not len(splits[name]):
            count, unit = (len(groups[1]), "groups") if groups is not None else (n, "rows")
            raise _too_few(count, name, fractions, unit)
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
    wanted = [s for s in fractions if fractions[s] > 0]
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
    splits = {name: np.zeros(0, np.int64) for name in fractions}
    for s, name in enumerate(wanted):
        splits[name] = np.flatnonzero(assigned == s)
    return splits


def _codes(values: list) -> Codes:
    names = sorted(set(values))
    index = {v: i for i, v in enumerate(names)}
    return np.array([index[v] for v in values], np.int64), names


def split_rows(
    rows: list[dict], val_fraction: float, test_fraction: float, seed: int, data_format: str,
    by_group: bool = False, review_fraction: float = 0.0,
) -> dict[str, list[dict]]:
    """`split_indices` on rows held in memory (tests, notebooks): labels for classification, and
    `row["group"]` with `by_group`."""
    labels = _codes([r["label"] for r in rows]) if data_format == "classification" else None
    groups = _codes([r["group"] for r in rows]) if by_group else None
    splits = split_indices(len(rows), val_fraction, test_fraction, seed, labels, groups, review_fraction)
    return {name: [rows[i] for i in members] for name, members in splits.items()}


def leaks_into(rows: Rows, held: list[Rows], dedup: DedupConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `rows`: does it repeat a row of `held` exactly, and (else) nearly? Near needs `dedup`
    and band keys on both sides (`dedup.keyed`, `dedup.add_band_keys`). Prepare's leakage check, also
    used to keep test rows out of training on reviewers' votes (feedback_leaks.py)."""
    exact = np.zeros(len(rows), bool)
    near = np.zeros(len(rows), bool)
    for other in held:
        exact |= exact_matches(rows, other)
        if dedup is not None and "bands" in rows.arrays:
            near |= near_matches(rows, other, dedup)
    return exact, near & ~exact


def remove_leaks(splits: dict[str, Rows], dedup: DedupConfig | None = None, drop: bool = True) -> dict[str, dict]:
    """Find rows of train (and val, review) that repeat a row of an earlier split in `HOLD_OUT_ORDER`,
    exactly or (with `dedup` and band keys) nearly.

    Test is held out from val, review and train, val from review and train, review from train. Counts
    are per split and kind; with `drop` the rows are removed.
    """
    report = {"exact": {}, "near": {}}
    held: list[Rows] = []
    for name in (n for n in HOLD_OUT_ORDER if n in splits):
        rows = splits[name]
        exact, near = leaks_into(rows, held, dedup)
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
