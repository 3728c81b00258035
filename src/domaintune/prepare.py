"""Stage 1, prepare: raw tables -> cleaned, deduplicated, leak-free train/val/test splits + data card.

Output folder layout (the contract with the train stage):
    train.jsonl, val.jsonl, test.jsonl   one row per line: {"id", "text", "label"}
    data_card.json, data_card.md          counts per step, label distribution, fingerprints
    config.yaml                           the resolved config that produced it
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from .clean import clean_text, normalized_key
from .config import Config, DataConfig, save_config
from .errors import DomaintuneError
from .io import atomic_write_json, atomic_write_text, staged_dir
from .sources import RawTable, is_named, named_dataset, read_table

SPLITS = ("train", "val", "test")


def run_prepare(cfg: Config) -> Path:
    """Prepare `cfg.data` into `cfg.data.output_dir`; returns that folder."""
    data = cfg.data
    pool_table, test_table = _open_sources(data)
    steps: dict[str, dict[str, int]] = {}
    pool = _rows_from(pool_table, data, steps)
    test = _rows_from(test_table, data, steps) if test_table is not None else None

    if test is None:
        splits = split_rows(pool, data.val_fraction, data.test_fraction, cfg.seed, data.format)
    else:
        rest = split_rows(pool, data.val_fraction, 0.0, cfg.seed, data.format)
        splits = {"train": rest["train"], "val": rest["val"], "test": test}
    leaks = remove_leaks(splits)
    if not splits["train"]:
        raise DomaintuneError(f"{pool_table.origin}: no training rows left after removing leaked rows")

    labels = _label_set(splits, data) if data.format == "classification" else None
    card = {
        "sources": {t.origin: t.fingerprint for t in (pool_table, test_table) if t is not None},
        "config_fingerprint": _config_fingerprint(data, cfg.seed),
        "steps": steps,
        "leaked_rows_removed": leaks,
        "rows": {name: len(rows) for name, rows in splits.items()},
        "labels": labels,
        "label_distribution": {
            name: dict(Counter(r["label"] for r in rows)) for name, rows in splits.items()
        } if labels else None,
    }
    card["fingerprint"] = hashlib.sha256(
        json.dumps([card["sources"], card["config_fingerprint"]], sort_keys=True).encode()
    ).hexdigest()[:16]

    with staged_dir(data.output_dir) as folder:
        for name, rows in splits.items():
            lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            atomic_write_text(folder / f"{name}.jsonl", lines)
        atomic_write_json(folder / "data_card.json", card)
        atomic_write_text(folder / "data_card.md", render_data_card(card))
        save_config(cfg, folder)
    return Path(data.output_dir)


def _open_sources(data: DataConfig) -> tuple[RawTable, RawTable | None]:
    if is_named(data.source):
        tables = named_dataset(data.source)
        pool, test = tables["train"], tables["test"]
    else:
        pool, test = read_table(data.source), None
    if data.test_source:
        test = read_table(data.test_source)
    return pool, test


def _rows_from(table: RawTable, data: DataConfig, steps: dict[str, dict[str, int]]) -> list[dict]:
    """Check columns, clean text, drop empty/short/unlabelled rows and exact duplicates."""
    frame = table.frame
    needed = [data.text_column] + ([data.label_column] if data.format == "classification" else [])
    for column in needed:
        if column is None:
            raise DomaintuneError("data.label_column must be set when data.format is classification")
        if column not in frame.columns:
            setting = "data.text_column" if column == data.text_column else "data.label_column"
            raise DomaintuneError(
                f"{table.origin}: no column '{column}' (columns: {', '.join(map(str, frame.columns))}); "
                f"set {setting}"
            )
    counts = Counter(read=len(frame))
    rows, seen = [], set()
    for index, record in enumerate(frame.to_dict("records")):
        text = clean_text(str(record[data.text_column] or ""))
        if len(text) < data.min_chars:
            counts["dropped_empty_or_short"] += 1
            continue
        label = None
        if data.format == "classification":
            label = clean_text(str(record[data.label_column] or ""))
            if not label:
                counts["dropped_missing_label"] += 1
                continue
        key = normalized_key(text)
        if key in seen:
            counts["dropped_exact_duplicate"] += 1
            continue
        seen.add(key)
        rows.append({"id": f"{table.origin}:{index}", "text": text, "label": label})
    counts["kept"] = len(rows)
    steps[table.origin] = dict(counts)
    if not rows:
        raise DomaintuneError(
            f"{table.origin}: no rows left after cleaning ({', '.join(f'{k}={v}' for k, v in counts.items())})"
        )
    return rows


def split_rows(
    rows: list[dict], val_fraction: float, test_fraction: float, seed: int, data_format: str
) -> dict[str, list[dict]]:
    """Seeded split; stratified by label for classification so rare labels reach every split."""
    if val_fraction + test_fraction >= 1.0:
        raise DomaintuneError(
            f"data.val_fraction + data.test_fraction must be below 1 (got {val_fraction + test_fraction})"
        )
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["label"] if data_format == "classification" else "", []).append(row)
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for key in sorted(groups):
        members = list(groups[key])
        rng.shuffle(members)
        n_test = round(len(members) * test_fraction)
        n_val = round(len(members) * val_fraction)
        splits["test"] += members[:n_test]
        splits["val"] += members[n_test:n_test + n_val]
        splits["train"] += members[n_test + n_val:]
    wanted = {"train": 1.0, "val": val_fraction, "test": test_fraction}
    for name, fraction in wanted.items():
        if fraction > 0 and not splits[name]:
            raise DomaintuneError(
                f"{len(rows)} rows are too few for the requested split (train/val/test = "
                f"{1 - val_fraction - test_fraction:.2f}/{val_fraction:.2f}/{test_fraction:.2f}): "
                f"'{name}' would be empty; add data or raise data.{name}_fraction"
            )
    for members in splits.values():
        rng.shuffle(members)
    return splits


def remove_leaks(splits: dict[str, list[dict]]) -> dict[str, int]:
    """Drop from train (and val) any row whose normalized text also appears in a later split."""
    removed = {}
    held_out: set[str] = set()
    for name in ("test", "val", "train"):
        before = len(splits[name])
        splits[name] = [r for r in splits[name] if normalized_key(r["text"]) not in held_out]
        removed[name] = before - len(splits[name])
        held_out.update(normalized_key(r["text"]) for r in splits[name])
    return {name: count for name, count in removed.items() if name != "test"}


def _label_set(splits: dict[str, list[dict]], data: DataConfig) -> list[str]:
    labels = data.labels or sorted({r["label"] for r in splits["train"]})
    for name, rows in splits.items():
        unknown = sorted({r["label"] for r in rows} - set(labels))
        if unknown:
            raise DomaintuneError(
                f"{name} split has labels {unknown} that are not among the labels {labels}; "
                "set data.labels or fix the data"
            )
    return labels


def _config_fingerprint(data: DataConfig, seed: int) -> str:
    payload = json.dumps({"data": data.model_dump(mode="json"), "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def render_data_card(card: dict) -> str:
    lines = ["# Data card", "", f"Fingerprint: `{card['fingerprint']}`", "", "## Sources", ""]
    lines += [f"- `{origin}` sha256 `{digest[:16]}`" for origin, digest in card["sources"].items()]
    lines += ["", "## Cleaning", "", "| source | step | rows |", "|---|---|---|"]
    for origin, counts in card["steps"].items():
        lines += [f"| {origin} | {step} | {n} |" for step, n in counts.items()]
    lines += ["", f"Leaked rows removed (exact match with a held-out split): {card['leaked_rows_removed']}"]
    lines += ["", "## Splits", "", "| split | rows | labels |", "|---|---|---|"]
    for name, n in card["rows"].items():
        dist = card["label_distribution"][name] if card["label_distribution"] else {}
        lines.append(f"| {name} | {n} | {', '.join(f'{k}: {v}' for k, v in sorted(dist.items()))} |")
    return "\n".join(lines) + "\n"


def read_split(prepared_dir: str | Path, split: str) -> list[dict]:
    path = Path(prepared_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise DomaintuneError(f"{path} not found: run `domaintune prepare` first")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_data_card(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / "data_card.json"
    if not path.is_file():
        raise DomaintuneError(f"{path} not found: run `domaintune prepare` first")
    return json.loads(path.read_text(encoding="utf-8"))
