"""Stage 1, prepare: sources -> cleaned, filtered, deduplicated, leak-free train/val/test + data card.

Output folder layout (the contract with the train stage):
    train.jsonl, val.jsonl, test.jsonl   one row per line: {"id", "text", "label", ...}; instruction
                                          and chat rows add "messages" [{role, content}], augmented
                                          training rows add "augmented": true (see prep/formats.py)
    review.jsonl                          only with data.review_fraction: the review page's prompts
    data_card.json, data_card.md          rows in/out per step and rule, malformed rows with their
                                          place, leakage, label distribution, token lengths, fingerprints
    token_lengths.png                     token-length histogram per split (chosen model's tokenizer)
    config.yaml                           the resolved config that produced it

The steps live beside it in `domaintune.data`, one module each; this module only runs them in order. Rows stream
from the sources into memory-mapped Arrow files in a scratch folder next to the output (removed when
the run ends, also on failure); every step after reading works on `Rows` views of them (prep/store.py).
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np

from domaintune.core.config import save_config
from domaintune.core.data_card import DataCard, read_data_card, write_data_card
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_text
from domaintune.core.outputs import check_output, config_inputs, data_inputs, staged_output
from domaintune.core.schema import Config, DataConfig
from domaintune.data import card as card_mod
from domaintune.data.augment import augment_rows
from domaintune.data.dedup import add_band_keys, drop_exact, drop_near
from domaintune.data.filters import apply_filters, measure, needs_tokens
from domaintune.data.formats import iter_rows
from domaintune.data.hygiene import label_counts, near_miss_labels, unmasked_pii
from domaintune.data.readers import Table, read_source
from domaintune.data.report import BadRows, StepLog
from domaintune.data.sources import is_named, named_dataset
from domaintune.data.splits import SPLITS, apply_weights, remove_leaks, split_indices, split_rows
from domaintune.data.store import Rows, join, row_schema, scratch_dir, spool, write_jsonl

__all__ = ["SPLITS", "read_data_card", "read_split", "remove_leaks", "run_prepare", "split_rows"]


def run_prepare(cfg: Config, overwrite: bool = False) -> Path:
    """Prepare `cfg.data` into `cfg.data.output_dir`; returns that folder.

    An existing folder there is replaced only if it is prepared data, or with `overwrite` (outputs.py).
    """
    data = cfg.data
    check_prepare_output(cfg, overwrite)
    bad, log = BadRows(data.strict), StepLog()
    with scratch_dir(data.output_dir) as scratch:
        pool_tables, test_table = _open_sources(data, bad)
        pool = _read(pool_tables, data, bad, log, scratch / "pool.arrow", "read", with_source=True)
        if not len(pool):
            raise DomaintuneError(f"{', '.join(t.origin for t, _ in pool_tables)}: no usable rows "
                                  f"({bad.summary()['by_reason'] or 'the sources are empty'})")
        # After the read: a wrong column or codec is reported before a first run converts the model.
        tokenizer, token_error = _tokenizer_or_error(cfg)

        pool = measure(pool, data, tokenizer, data.num_proc)
        read = [pool]  # the rows as read, before the filters: what the checks of the source count
        garbled = card_mod.garbled_rows(pool)  # before the filters: a wrong codec can lose every row to them
        pool = apply_filters(pool, data, log)
        if data.dedup.exact:
            pool = drop_exact(pool, log)
        if data.dedup.near:
            pool = drop_near(add_band_keys(pool, data.dedup, data.num_proc), data.dedup, log)
        if not len(pool):
            raise DomaintuneError(f"no rows left after filtering and deduplication ({log.steps})"
                                  + (f"; {card_mod.garbled_warning(garbled)}" if garbled.rows else ""))

        splits = _split(pool, data, cfg.seed, test_fraction=0.0 if test_table else data.test_fraction)
        if test_table is not None:
            test = _read([(test_table, 1.0)], data, bad, log, scratch / "test.arrow", "read_test_file")
            test = measure(test, data, tokenizer, data.num_proc)
            read.append(test)
            splits["test"] = add_band_keys(test, data.dedup, data.num_proc) if data.dedup.near else test
        leaks = remove_leaks(splits, data.dedup if data.dedup.near else None, drop=data.remove_leaks)
        if not len(splits["train"]):
            raise DomaintuneError("no training rows left after removing rows that leak into val/test")

        weights = {t.origin: w for t, w in pool_tables}
        splits["train"], augmentation = _weight_and_augment(splits["train"], weights, cfg, tokenizer, log, scratch)
        labels = _label_set(splits, data) if data.format == "classification" else None
        checks = {"garbled_rows": garbled, "unmasked_pii": unmasked_pii(read, data),
                  "label_near_misses": near_miss_labels(label_counts(*read), data.labels) if labels else None}

        with staged_output(data.output_dir, "prepared", overwrite) as folder:
            card = _build_card(cfg, pool_tables, test_table, bad, log, leaks, splits, augmentation, labels,
                               _token_lengths(cfg, splits, token_error, folder), checks)
            for name, rows in splits.items():
                write_jsonl(rows, folder / f"{name}.jsonl")
            write_data_card(folder, card)
            atomic_write_text(folder / "data_card.md", card_mod.render_markdown(card))
            save_config(cfg, folder)
    return Path(data.output_dir)


def check_prepare_output(cfg: Config, overwrite: bool = False) -> Path:
    return check_output(cfg.data.output_dir, "prepared", config_inputs(cfg) + data_inputs(cfg), overwrite,
                        "data.output_dir")


def _read(tables: list[tuple[Table, float]], data: DataConfig, bad: BadRows, log: StepLog, path: Path,
          step: str, with_source: bool = False) -> Rows:
    """Stream the tables' rows into an Arrow file; every record is a row or a counted bad row."""
    before = Counter(bad.by_reason)

    def rows():
        for table, _ in tables:
            for row in iter_rows(table, data, bad):
                if with_source:
                    row["source"] = table.origin
                yield row

    read = Rows(spool(rows(), row_schema(data), path))
    removed = dict(Counter(bad.by_reason) - before)
    log.record(step, len(read) + sum(removed.values()), len(read), removed)
    return read


def _split(pool: Rows, data: DataConfig, seed: int, test_fraction: float) -> dict[str, Rows]:
    labels = pool.codes("label") if data.format == "classification" else None
    groups = pool.codes("group") if data.group_column else None
    indices = split_indices(len(pool), data.val_fraction, test_fraction, seed, labels, groups, data.review_fraction)
    return {name: pool.select(members) for name, members in indices.items()}


def _weight_and_augment(
    train: Rows, weights: dict[str, float], cfg: Config, tokenizer, log: StepLog, scratch: Path
) -> tuple[Rows, dict | None]:
    """Source weights and augmentation, on train only (after the leakage check), then one seeded
    shuffle; returns the new train rows and what augmentation did (None when it is off)."""
    data = cfg.data
    weighted = apply_weights(train, weights, cfg.seed)
    rejected: Counter = Counter()
    made = Rows(spool(augment_rows(weighted, cfg, rejected), row_schema(data), scratch / "augmented.arrow"))
    made = measure(made, data, tokenizer, data.num_proc)  # token counts for the card
    if "copy" in weighted.arrays:
        made = made.with_arrays(copy=np.zeros(len(made), np.int64))
    order = list(range(len(weighted) + len(made)))
    random.Random(cfg.seed).shuffle(order)
    final = join(weighted, made).select(np.array(order, np.int64))
    if len(weighted) != len(train) or len(made):
        copies = int(np.count_nonzero(weighted.arrays["copy"])) if "copy" in weighted.arrays else 0
        log.record("train_weights_and_augmentation", len(train), len(final),
                   {"weight_sampling": len(train) - (len(weighted) - copies)},
                   {"weight_repeats": copies, "augmented": len(made)})
    if data.augment.method == "none":
        return final, None
    return final, {"method": data.augment.method, "added": len(made), "rejected": dict(rejected)}


def _distribution(rows: Rows) -> dict[str, int]:
    """Rows per label, labels in order of first appearance."""
    codes, names = rows.codes("label")
    found, first, counts = np.unique(codes, return_index=True, return_counts=True)
    return {names[found[k]]: int(counts[k]) for k in np.argsort(first)}


def _build_card(cfg, pool_tables, test_table, bad, log, leaks, splits, augmentation, labels, token_lengths,
                checks: dict) -> DataCard:
    """The card; `checks`: what was counted in the rows as read (garbled text, label typos, personal data)."""
    data = cfg.data
    sources = {t.origin: {"sha256": t.fingerprint, "encoding": t.encoding, "records": t.count,
                          "weight": w, "role": "test" if t is test_table else "pool"}
               for t, w in [*pool_tables, *([(test_table, 1.0)] if test_table else [])]}
    config_fingerprint = card_mod.fingerprint(
        {"data": data.model_dump(mode="json", exclude={"output_dir"}), "seed": cfg.seed}
    )
    return DataCard(
        format=data.format,
        sources=sources,
        config_fingerprint=config_fingerprint,
        fingerprint=card_mod.fingerprint([{k: v["sha256"] for k, v in sources.items()}, config_fingerprint]),
        bad_rows=bad.summary(),
        steps=log.steps,
        removed_examples=log.examples,
        dedup={"exact": _removed(log, "exact_dedup"), "near": _removed(log, "near_dedup"),
               "threshold": data.dedup.threshold, "shingle": data.dedup.shingle},
        leakage={**leaks, "removed": data.remove_leaks},
        leaked_rows_removed={n: leaks["exact"][n] + leaks["near"][n] if data.remove_leaks else 0
                             for n in leaks["exact"]},
        rows={name: len(rows) for name, rows in splits.items()},
        augmented_rows=augmentation["added"] if augmentation else 0,
        augmentation=augmentation,
        labels=labels,
        label_distribution={name: _distribution(rows) for name, rows in splits.items()} if labels else None,
        token_lengths=token_lengths,
        **checks,
    )


def _removed(log: StepLog, step: str) -> int:
    return sum(sum(s["removed"].values()) for s in log.steps if s["step"] == step)


def _open_sources(data: DataConfig, bad: BadRows) -> tuple[list[tuple[Table, float]], Table | None]:
    """The pool tables with their weights, and the test table (named dataset, HF test split, or file).
    Tables are opened here and read when their rows are wanted."""
    if is_named(data.source):
        tables = named_dataset(data.source, bad)
    else:
        tables = read_source(data.source, data.encoding, data.text_unit, bad)
    pool, test = [(tables["train"], 1.0)], tables.get("test")
    for entry in data.sources:
        extra = named_dataset(entry.path, bad)["train"] if is_named(entry.path) else \
            read_source(entry.path, data.encoding, data.text_unit, bad)["train"]
        if extra.origin in {t.origin for t, _ in pool}:
            extra.origin = entry.path  # two files of the same name: the path keeps row ids unique
        pool.append((extra, entry.weight))
    if data.test_source:
        test = read_source(data.test_source, data.encoding, data.text_unit, bad)["train"]
    return pool, test


def _tokenizer_or_error(cfg: Config):
    """The chosen model's tokenizer and None, or None and why it could not be loaded. Only a token
    filter needs it; otherwise the card records the reason instead of the token lengths."""
    try:
        return _cached_tokenizer(cfg.model.name, cfg.model.revision), None
    except (DomaintuneError, OSError, ValueError) as exc:
        if needs_tokens(cfg.data):
            raise
        return None, f"tokenizer of '{cfg.model.name}' could not be loaded ({str(exc).splitlines()[0]})"


@functools.lru_cache(maxsize=2)
def _cached_tokenizer(name: str, revision: str | None):
    """Loaded once per process: tests and notebooks call prepare many times with one model."""
    from domaintune.modeling.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(name), revision)


def _token_lengths(cfg: Config, splits: dict[str, Rows], error: str | None, folder: Path) -> dict:
    """Per-split token statistics and the histogram PNG (token counts come from the filter map)."""
    if error:
        return {"error": error}
    lengths = {name: rows.arrays["tokens"] for name, rows in splits.items()}
    card_mod.write_histogram(lengths, cfg.model.name, folder / card_mod.HISTOGRAM)
    return {"tokenizer": cfg.model.name, "splits": card_mod.token_stats(lengths), "histogram": card_mod.HISTOGRAM}


def _label_set(splits: dict[str, Rows], data: DataConfig) -> list[str]:
    labels = data.labels or sorted(set(splits["train"].codes("label")[1]))
    for name, rows in splits.items():
        unknown = sorted(set(rows.codes("label")[1]) - set(labels))
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
