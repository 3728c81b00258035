"""Stage 1, prepare: sources -> cleaned, filtered, deduplicated, leak-free train/val/test + data card.

Output folder layout (the contract with the train stage):
    train.jsonl, val.jsonl, test.jsonl   one row per line: {"id", "text", "label", ...}; instruction
                                          and chat rows add "messages" [{role, content}], augmented
                                          training rows add "augmented": true (see prep/formats.py)
    data_card.json, data_card.md          rows in/out per step and rule, malformed rows with their
                                          place, leakage, label distribution, token lengths, fingerprints
    token_lengths.png                     token-length histogram per split (chosen model's tokenizer)
    config.yaml                           the resolved config that produced it

The steps live in `domaintune.prep`, one module each; this module only runs them in order.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from pathlib import Path

from .config import Config, DataConfig, save_config
from .errors import DomaintuneError
from .io import atomic_write_json, atomic_write_text, staged_dir
from .prep import card as card_mod
from .prep.augment import augment_rows
from .prep.dedup import drop_exact, drop_near, signatures
from .prep.filters import apply_filters, needs_tokens
from .prep.formats import rows_from_table
from .prep.readers import Table, read_source
from .prep.report import BadRows, StepLog
from .prep.splits import SPLITS, apply_weights, remove_leaks, split_rows
from .sources import is_named, named_dataset

__all__ = ["SPLITS", "read_data_card", "read_split", "remove_leaks", "run_prepare", "split_rows"]


def run_prepare(cfg: Config) -> Path:
    """Prepare `cfg.data` into `cfg.data.output_dir`; returns that folder."""
    data = cfg.data
    bad, log = BadRows(data.strict), StepLog()
    pool_tables, test_table, pool_reader_bad = _open_sources(data, bad)
    test_reader_bad = Counter(bad.by_reason) - pool_reader_bad  # malformed lines of data.test_source
    pool = []
    for table, _ in pool_tables:
        for row in rows_from_table(table, data, bad):
            row["source"] = table.origin
            pool.append(row)
    records = sum(len(t.records) for t, _ in pool_tables) + sum(pool_reader_bad.values())
    log.record("read", records, len(pool), dict(Counter(bad.by_reason) - test_reader_bad))
    if not pool:
        raise DomaintuneError(f"{', '.join(t.origin for t, _ in pool_tables)}: no usable rows "
                              f"({bad.summary()['by_reason'] or 'the sources are empty'})")

    garbled = card_mod.garbled_rows(pool)
    tokenizer = _tokenizer(cfg) if needs_tokens(data) else None
    pool = apply_filters(pool, data, _count_tokens(tokenizer, pool) if tokenizer else None, log)
    if data.dedup.exact:
        pool = drop_exact(pool, log)
    sig_of: dict[str, object] | None = None
    if data.dedup.near:
        sigs = signatures([r["text"] for r in pool], data.dedup)
        pool, sigs = drop_near(pool, sigs, data.dedup, log)
        sig_of = dict(zip((r["id"] for r in pool), sigs, strict=True))
    if not pool:
        raise DomaintuneError(f"no rows left after filtering and deduplication ({log.steps})"
                              + (f"; {card_mod.garbled_warning(garbled)}" if garbled["rows"] else ""))

    by_group = data.group_column is not None
    if test_table is None:
        splits = split_rows(pool, data.val_fraction, data.test_fraction, cfg.seed, data.format, by_group)
    else:
        before = Counter(bad.by_reason)
        test = rows_from_table(test_table, data, bad)
        log.record("read_test_file", len(test_table.records) + sum(test_reader_bad.values()), len(test),
                   dict(Counter(bad.by_reason) - before + test_reader_bad))
        rest = split_rows(pool, data.val_fraction, 0.0, cfg.seed, data.format, by_group)
        splits = {"train": rest["train"], "val": rest["val"], "test": test}
        if sig_of is not None:
            sig_of.update(zip((r["id"] for r in test), signatures([r["text"] for r in test], data.dedup), strict=True))
    split_sigs = {n: [sig_of[r["id"]] for r in rows] for n, rows in splits.items()} if sig_of is not None else None
    leaks = remove_leaks(splits, split_sigs, data.dedup, drop=data.remove_leaks)
    if not splits["train"]:
        raise DomaintuneError("no training rows left after removing rows that leak into val/test")

    augmented = _weight_and_augment(splits, {t.origin: w for t, w in pool_tables}, data, cfg.seed, log)
    labels = _label_set(splits, data) if data.format == "classification" else None
    card = _build_card(cfg, pool_tables, test_table, bad, log, leaks, splits, augmented, labels)
    card["garbled_rows"] = garbled

    with staged_dir(data.output_dir) as folder:
        card["token_lengths"] = _token_lengths(cfg, tokenizer, splits, folder)
        for name, rows in splits.items():
            lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            atomic_write_text(folder / f"{name}.jsonl", lines)
        atomic_write_json(folder / "data_card.json", card)
        atomic_write_text(folder / "data_card.md", card_mod.render_markdown(card))
        save_config(cfg, folder)
    return Path(data.output_dir)


def _weight_and_augment(
    splits: dict[str, list[dict]], weights: dict[str, float], data: DataConfig, seed: int, log: StepLog
) -> int:
    """Source weights and augmentation, on train only (after the leakage check); returns rows added
    by augmentation."""
    before = splits["train"]
    originals = {id(row) for row in before}
    train = apply_weights(before, weights, seed)
    augmented = augment_rows(train, data.augment, data.format, seed)
    splits["train"] = train + augmented
    random.Random(seed).shuffle(splits["train"])
    if len(train) != len(before) or augmented:
        copies = sum(id(row) not in originals for row in train)
        log.record("train_weights_and_augmentation", len(before), len(splits["train"]),
                   {"weight_sampling": len(before) - (len(train) - copies)},
                   {"weight_repeats": copies, "augmented": len(augmented)})
    return len(augmented)


def _build_card(cfg, pool_tables, test_table, bad, log, leaks, splits, augmented, labels) -> dict:
    data = cfg.data
    card = {
        "format": data.format,
        "sources": {t.origin: {"sha256": t.fingerprint, "encoding": t.encoding, "records": len(t.records),
                               "weight": w, "role": "test" if t is test_table else "pool"}
                    for t, w in [*pool_tables, *([(test_table, 1.0)] if test_table else [])]},
        "config_fingerprint": card_mod.fingerprint(
            {"data": data.model_dump(mode="json", exclude={"output_dir"}), "seed": cfg.seed}
        ),
        "bad_rows": bad.summary(),
        "steps": log.steps,
        "removed_examples": log.examples,
        "dedup": {"exact": _removed(log, "exact_dedup"), "near": _removed(log, "near_dedup"),
                  "threshold": data.dedup.threshold, "shingle": data.dedup.shingle},
        "leakage": {**leaks, "removed": data.remove_leaks},
        "leaked_rows_removed": {n: leaks["exact"][n] + leaks["near"][n] for n in ("val", "train")}
        if data.remove_leaks else {"val": 0, "train": 0},
        "rows": {name: len(rows) for name, rows in splits.items()},
        "augmented_rows": augmented,
        "labels": labels,
        "label_distribution": {name: dict(Counter(r["label"] for r in rows)) for name, rows in splits.items()}
        if labels else None,
    }
    card["fingerprint"] = card_mod.fingerprint(
        [{k: v["sha256"] for k, v in card["sources"].items()}, card["config_fingerprint"]]
    )
    return card


def _removed(log: StepLog, step: str) -> int:
    return sum(sum(s["removed"].values()) for s in log.steps if s["step"] == step)


def _open_sources(data: DataConfig, bad: BadRows) -> tuple[list[tuple[Table, float]], Table | None, Counter]:
    """The pool tables with their weights, the test table (named dataset, HF test split, or file), and
    the malformed-line counts of the pool files (the test file is read last, so they can be told apart)."""
    test = None
    if is_named(data.source):
        tables = named_dataset(data.source, bad)
        pool, test = [(tables["train"], 1.0)], tables.get("test")
    else:
        tables = read_source(data.source, data.encoding, data.text_unit, bad)
        pool, test = [(tables["train"], 1.0)], tables.get("test")
    for entry in data.sources:
        extra = named_dataset(entry.path, bad)["train"] if is_named(entry.path) else \
            read_source(entry.path, data.encoding, data.text_unit, bad)["train"]
        if extra.origin in {t.origin for t, _ in pool}:
            extra.origin = entry.path  # two files of the same name: the path keeps row ids unique
        pool.append((extra, entry.weight))
    pool_bad = Counter(bad.by_reason)
    if data.test_source:
        test = read_source(data.test_source, data.encoding, data.text_unit, bad)["train"]
    return pool, test, pool_bad


def _tokenizer(cfg: Config):
    return _cached_tokenizer(cfg.model.name, cfg.model.revision)


@functools.lru_cache(maxsize=2)
def _cached_tokenizer(name: str, revision: str | None):
    """Loaded once per process: tests and notebooks call prepare many times with one model."""
    from .models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(name), revision)


def _count_tokens(tokenizer, rows: list[dict]) -> list[int]:
    counts: list[int] = []
    for start in range(0, len(rows), 1000):
        batch = [r["text"] for r in rows[start:start + 1000]]
        counts += [len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]]
    return counts


def _token_lengths(cfg: Config, tokenizer, splits: dict[str, list[dict]], folder: Path) -> dict:
    """Per-split token statistics and the histogram PNG; a model that cannot be loaded is recorded,
    not fatal, since no token filter asked for it."""
    try:
        tokenizer = tokenizer or _tokenizer(cfg)
    except (DomaintuneError, OSError, ValueError) as exc:
        return {"error": f"tokenizer of '{cfg.model.name}' could not be loaded ({str(exc).splitlines()[0]})"}
    lengths = {name: _count_tokens(tokenizer, rows) for name, rows in splits.items()}
    card_mod.write_histogram(lengths, cfg.model.name, folder / card_mod.HISTOGRAM)
    return {"tokenizer": cfg.model.name, "splits": card_mod.token_stats(lengths), "histogram": card_mod.HISTOGRAM}


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


def read_split(prepared_dir: str | Path, split: str) -> list[dict]:
    path = Path(prepared_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise DomaintuneError(f"{path} not found: run `domaintune prepare` first; "
                              "see docs/troubleshooting.md#stage-order")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_data_card(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / "data_card.json"
    if not path.is_file():
        raise DomaintuneError(f"{path} not found: run `domaintune prepare` first; "
                              "see docs/troubleshooting.md#stage-order")
    return json.loads(path.read_text(encoding="utf-8"))
