"""Seeded splits (stratified by label, or by group), leakage removal between splits, source weights."""

from __future__ import annotations

import random

from ..clean import normalized_key
from ..config import DedupConfig
from ..errors import DomaintuneError
from .dedup import near_matches

SPLITS = ("train", "val", "test")


def _too_few(n: int, name: str, val_fraction: float, test_fraction: float, unit: str = "rows") -> DomaintuneError:
    return DomaintuneError(
        f"{n} {unit} are too few for the requested split (train/val/test = "
        f"{1 - val_fraction - test_fraction:.2f}/{val_fraction:.2f}/{test_fraction:.2f}): "
        f"'{name}' would be empty; add data or raise data.{name}_fraction; see docs/troubleshooting.md#too-few-rows"
    )


def split_rows(
    rows: list[dict], val_fraction: float, test_fraction: float, seed: int, data_format: str,
    by_group: bool = False,
) -> dict[str, list[dict]]:
    """Seeded split; stratified by label for classification so rare labels reach every split; with
    `by_group` whole groups (row["group"]) are assigned, so no group straddles two splits."""
    if val_fraction + test_fraction >= 1.0:
        raise DomaintuneError(
            f"data.val_fraction + data.test_fraction must be below 1 (got {val_fraction + test_fraction})"
        )
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    if by_group:
        _split_groups(rows, val_fraction, test_fraction, rng, splits)
    else:
        strata: dict[str, list[dict]] = {}
        for row in rows:
            strata.setdefault(row["label"] if data_format == "classification" else "", []).append(row)
        for key in sorted(strata):
            members = list(strata[key])
            rng.shuffle(members)
            n_test = round(len(members) * test_fraction)
            n_val = round(len(members) * val_fraction)
            splits["test"] += members[:n_test]
            splits["val"] += members[n_test:n_test + n_val]
            splits["train"] += members[n_test + n_val:]
    wanted = {"train": 1.0, "val": val_fraction, "test": test_fraction}
    for name, fraction in wanted.items():
        if fraction > 0 and not splits[name]:
            groups = len({r["group"] for r in rows}) if by_group else None
            raise _too_few(groups if by_group else len(rows), name, val_fraction, test_fraction,
                           "groups" if by_group else "rows")
    for members in splits.values():
        rng.shuffle(members)
    return splits


def _split_groups(rows, val_fraction, test_fraction, rng, splits) -> None:
    """Shuffle the groups, then fill test, then val, each until it holds its share of rows; the rest
    is train. A split may overshoot its share by part of one group: groups are never cut."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    keys = sorted(groups)
    rng.shuffle(keys)
    order = [name for name, f in (("test", test_fraction), ("val", val_fraction)) if f > 0] + ["train"]
    targets = {"test": test_fraction * len(rows), "val": val_fraction * len(rows), "train": float("inf")}
    step = 0
    for key in keys:
        splits[order[step]] += groups[key]
        while len(splits[order[step]]) >= targets[order[step]]:
            step += 1


def remove_leaks(
    splits: dict[str, list[dict]],
    sigs: dict[str, list] | None = None,
    dedup: DedupConfig | None = None,
    drop: bool = True,
) -> dict[str, dict[str, int]]:
    """Find rows of train (and val) that repeat a row of a later split, exactly or nearly.

    Test is held out from val and train, val from train. Counts are per split and kind; with `drop` the
    rows are removed (and their signatures with them, so `sigs` stays parallel to `splits`).
    """
    report = {"exact": {}, "near": {}}
    held_keys: set[str] = set()
    held_sigs: list = []
    held_texts: list[str] = []
    for name in ("test", "val", "train"):
        rows = splits[name]
        exact = [normalized_key(r["text"]) in held_keys for r in rows]
        near = [False] * len(rows)
        if sigs is not None and dedup is not None and held_sigs:
            hits = near_matches([r["text"] for r in rows], sigs[name], held_texts, held_sigs, dedup)
            near = [hit and not ex for hit, ex in zip(hits, exact, strict=True)]
        if name != "test":
            report["exact"][name] = sum(exact)
            report["near"][name] = sum(near)
        if drop:
            keep = [not (e or n) for e, n in zip(exact, near, strict=True)]
            splits[name] = [r for r, k in zip(rows, keep, strict=True) if k]
            if sigs is not None:
                sigs[name] = [s for s, k in zip(sigs[name], keep, strict=True) if k]
        held_keys.update(normalized_key(r["text"]) for r in splits[name])
        if sigs is not None:
            held_sigs += sigs[name]
            held_texts += [r["text"] for r in splits[name]]
    return report


def apply_weights(rows: list[dict], weights: dict[str, float], seed: int) -> list[dict]:
    """Scale each source's training rows by its weight: the integer part repeats rows, the fraction
    keeps a seeded sample of them once more (weight 0.5 keeps half; 2.5 gives 2 copies plus half)."""
    if all(w == 1.0 for w in weights.values()):
        return rows
    rng = random.Random(seed)
    out = []
    for row in rows:
        weight = weights.get(row.get("source", ""), 1.0)
        copies = int(weight) + (1 if rng.random() < weight - int(weight) else 0)
        for k in range(copies):
            out.append(row if k == 0 else {**row, "id": f"{row['id']}#{k + 1}"})
    return out
