"""Rows on disk: memory-mapped Arrow files in a scratch folder, and views of some of their rows.

Rows stream from the readers into Arrow files (HF `datasets` memory-maps them), so the documents never
sit in memory as Python objects. Every later step works on `Rows`: a dataset, the positions of the rows
it keeps in their current order, and small per-row arrays computed on the way (exact-dedup hash,
MinHash band keys, token count). Selecting rows selects positions and arrays, never copies documents.
Heavy per-row work is one batched `Dataset.map` per step, in worker processes once there are enough
rows to pay for them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from datasets import Dataset, concatenate_datasets

from domaintune.core.schema import DataConfig

BATCH = 1000
# A pool of workers costs ~0.7 s per map (fork, pickling, one Arrow file each; measured on a loaded 2-core
# machine) and the filter map does ~0.1 ms of work per row: below ~10,000 rows per worker it loses.
ROWS_PER_WORKER = 10_000
SHOWN_MAP_ROWS = 20_000  # smaller maps take a second or two: no progress bar
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


@contextmanager
def scratch_dir(output_dir: str | Path) -> Iterator[Path]:
    """A temporary folder next to the output (same disk, so no surprise on a small /tmp), removed
    afterwards, also when the run fails."""
    final = Path(output_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".scratch", dir=final.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def row_schema(data: DataConfig) -> pa.Schema:
    """The internal row schema (prep/formats.py) as Arrow columns, in the order rows are written out."""
    fields = [("id", pa.string()), ("text", pa.string()), ("label", pa.string())]
    if data.format in ("instruction", "chat"):
        fields.append(("messages", pa.list_(_MESSAGE)))
    if data.group_column:
        fields.append(("group", pa.string()))
    return pa.schema([*fields, ("source", pa.string()), ("augmented", pa.bool_())])


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def spool(rows: Iterable[dict], schema: pa.Schema, path: Path) -> Dataset:
    """Write rows to an Arrow file batch by batch; the dataset returned memory-maps it."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for chunk in _chunks(rows, BATCH):
            writer.write_batch(pa.RecordBatch.from_pylist(chunk, schema=schema))
    return Dataset.from_file(str(path))


def workers(rows: int, num_proc: int | None) -> int | None:
    """Worker processes for a map over `rows` rows; None keeps it in this process."""
    wanted = num_proc or os.cpu_count() or 1
    count = min(wanted, rows // ROWS_PER_WORKER)
    return count if count >= 2 else None


class Rows:
    """Some rows of a dataset, in order, with per-row arrays (`key`, `bands`, `tokens`, `copy`) that
    follow every selection. The dataset is never an index view itself: positions do that."""

    def __init__(self, dataset: Dataset, positions: np.ndarray | None = None, **arrays: np.ndarray):
        self.dataset = dataset
        self.positions = np.arange(len(dataset)) if positions is None else np.asarray(positions, np.int64)
        self.arrays = arrays

    @classmethod
    def from_list(cls, rows: list[dict]) -> Rows:
        """Rows held in memory (tests, notebooks, the few rows augmentation makes)."""
        return cls(Dataset.from_list(rows))

    def __len__(self) -> int:
        return len(self.positions)

    def select(self, which: np.ndarray) -> Rows:
        """A boolean mask over these rows, or indices into them (repeats and any order allowed)."""
        return Rows(self.dataset, self.positions[which], **{k: v[which] for k, v in self.arrays.items()})

    def with_arrays(self, **arrays: np.ndarray) -> Rows:
        return Rows(self.dataset, self.positions, **{**self.arrays, **arrays})

    @property
    def table(self) -> pa.Table:
        return self.dataset.data.table

    def codes(self, name: str) -> tuple[np.ndarray, list[str]]:
        """A string column as one code per row plus the distinct values (null reads as "")."""
        column = self.table.column(name).take(self.positions).combine_chunks().fill_null("").dictionary_encode()
        return column.indices.to_numpy(zero_copy_only=False), column.dictionary.to_pylist()

    def text(self, i: int) -> str:
        """Random access to one row's text (memory-mapped: only that row is read)."""
        if not hasattr(self, "_texts"):
            self._texts = self.table.column("text")
        return self._texts[int(self.positions[i])].as_py()

    def batches(self, size: int = BATCH) -> Iterator[list[dict]]:
        """The rows as dicts, `size` at a time, in order; a weight copy's id gets `#k` (k = 2, 3, ...)."""
        copies = self.arrays.get("copy")
        for start in range(0, len(self), size):
            batch = self.table.take(self.positions[start:start + size]).to_pylist()
            if copies is not None:
                for row, k in zip(batch, copies[start:start + size].tolist(), strict=True):
                    if k:
                        row["id"] = f"{row['id']}#{k + 1}"
            yield batch

    def map(self, function: Callable, columns: list[str], num_proc: int | None, desc: str, **kwargs) -> pa.Table:
        """`function(*column_batches, **kwargs) -> {name: array}` over these rows, in order; returns the
        output columns (an Arrow table next to the input, memory-mapped)."""
        view = self.dataset.select(self.positions)
        quiet = len(self) < SHOWN_MAP_ROWS and not datasets.are_progress_bars_disabled()
        if quiet:
            datasets.disable_progress_bars()
        try:
            out = view.map(function, batched=True, batch_size=BATCH, input_columns=columns,
                           remove_columns=view.column_names, fn_kwargs=kwargs, num_proc=workers(len(self), num_proc),
                           desc=desc, load_from_cache_file=False, new_fingerprint=uuid.uuid4().hex)
        finally:
            if quiet:
                datasets.enable_progress_bars()
        return out.data.table


def join(first: Rows, second: Rows) -> Rows:
    """`first` then `second` as one view (same schema); only the arrays both carry are kept."""
    if len(second) == 0:
        return first
    dataset = concatenate_datasets([first.dataset, second.dataset])
    shared = set(first.arrays) & set(second.arrays)
    return Rows(dataset, np.concatenate([first.positions, second.positions + len(first.dataset)]),
                **{k: np.concatenate([first.arrays[k], second.arrays[k]]) for k in shared})


def write_jsonl(rows: Rows, path: Path) -> None:
    """One JSON object per row, keys in schema order; `source` and `augmented` only where set (rows of a
    test file have no source; only augmented rows say so)."""
    with path.open("w", encoding="utf-8") as handle:
        for batch in rows.batches():
            for row in batch:
                if row.get("source") is None:
                    row.pop("source", None)
                if not row.get("augmented"):
                    row.pop("augmented", None)
            handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in batch))
