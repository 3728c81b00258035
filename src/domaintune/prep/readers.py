"""Reading sources into records: (where, fields) pairs that remember their line for the data card.

Malformed input (wrong column count, broken quoting, invalid JSON lines) goes to `BadRows`, which
counts it or, with `data.strict`, stops at the first one. Text is decoded here once: UTF-8 (with or
without BOM) first, then cp949 (a superset of EUC-KR, common in Korean exports), then charset-normalizer.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DomaintuneError
from .report import BadRows

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet", *TEXT_SUFFIXES)


@dataclass
class Table:
    """Records read from one source; `origin` names it in errors, row ids and the data card."""

    origin: str
    fingerprint: str
    records: list[tuple[str, dict]] = field(default_factory=list)
    plain_text: bool = False  # records carry only {"text"}: no columns to map
    encoding: str | None = None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_bytes(data: bytes, encoding: str, origin: str) -> tuple[str, str]:
    """Decode a file's bytes; returns (text, encoding used).

    Order: UTF-8 (BOM or not); cp949 then EUC-KR, which reject UTF-8 Korean within a few bytes, so a
    strict success means a legacy Korean file; then UTF-8 with a few corrupt bytes (the damaged rows
    are caught as binary garbage later); only then charset-normalizer's guess.
    """
    if encoding != "auto":
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as exc:
            raise DomaintuneError(f"{origin}: cannot be decoded as {encoding} ({exc}); set data.encoding; "
                                  "see docs/troubleshooting.md#garbled-korean-text") from None
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    for codec in ("cp949", "euc-kr"):
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError:
            continue
    lenient = data.decode("utf-8-sig", errors="replace")
    lines = lenient.splitlines()
    if sum("\ufffd" in line for line in lines) <= max(1, len(lines) // 100):
        return lenient, "utf-8"
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise DomaintuneError(f"{origin}: the text encoding could not be detected; set data.encoding; "
                              "see docs/troubleshooting.md#garbled-korean-text")
    return str(best), best.encoding


def read_source(path: str | Path, encoding: str, text_unit: str, bad: BadRows) -> dict[str, Table]:
    """Read one file or folder; returns {"train": Table} plus "test" for an HF DatasetDict that has one."""
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return read_hf_folder(path)
        return {"train": read_text_folder(path, encoding, text_unit, bad)}
    if not path.is_file():
        raise DomaintuneError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DomaintuneError(
            f"{path}: unsupported file type '{suffix}' (use {', '.join(TABLE_SUFFIXES)}, or a folder)"
        )
    data = path.read_bytes()
    table = Table(path.name, _sha256(data))
    if suffix == ".parquet":
        table.records = _parquet_records(path)
        return {"train": table}
    text, table.encoding = decode_bytes(data, encoding, path.name)
    if suffix in (".csv", ".tsv", ".tab"):
        table.records = csv_records(text, "," if suffix == ".csv" else "\t", path.name, bad)
    elif suffix in (".jsonl", ".ndjson"):
        table.records = jsonl_records(text, path.name, bad)
    elif suffix == ".json":
        table.records = json_records(text, path.name)
    else:
        table.records = text_records(text, text_unit, "")
        table.plain_text = True
    return {"train": table}


def csv_records(text: str, delimiter: str, origin: str, bad: BadRows) -> list[tuple[str, dict]]:
    """Rows of a CSV/TSV as dicts keyed by the header; quoted fields may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DomaintuneError(f"{origin}: the file is empty") from None
    except csv.Error as exc:
        raise DomaintuneError(f"{origin}: line 1: the header cannot be parsed ({exc})") from None
    header = [name.strip() for name in header]
    records, last_line = [], reader.line_num
    while True:
        start = last_line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if reader.line_num > start:
                reason = f"broken quoting: a quote opened here never closes (lines {start}-{reader.line_num} lost)"
            else:
                reason = f"broken quoting ({exc})"
            bad.add(origin, f"line {start}", reason)
            last_line = reader.line_num
            continue
        last_line = reader.line_num
        if not row or row == [""]:
            continue  # a blank line is not a row
        if len(row) != len(header):
            span = f"lines {start}-{last_line}" if last_line > start else f"line {start}"
            bad.add(origin, span, f"expected {len(header)} columns, found {len(row)}", delimiter.join(row))
            continue
        records.append((f"line {start}", dict(zip(header, row, strict=True))))
    return records


def jsonl_records(text: str, origin: str, bad: BadRows) -> list[tuple[str, dict]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.add(origin, f"line {number}", f"invalid JSON ({exc.msg} at column {exc.colno})", line)
            continue
        if not isinstance(value, dict):
            bad.add(origin, f"line {number}", f"a JSON {type(value).__name__}, not an object", line)
            continue
        records.append((f"line {number}", value))
    return records


def json_records(text: str, origin: str) -> list[tuple[str, dict]]:
    """A JSON array of objects, or an object holding exactly one such array (`{"data": [...]}`)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DomaintuneError(f"{origin}: line {exc.lineno}: invalid JSON ({exc.msg}); for one object per "
                              "line use .jsonl") from None
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DomaintuneError(f"{origin}: expected a JSON array of objects or an object with one array")
        value = lists[0]
    if not isinstance(value, list):
        raise DomaintuneError(f"{origin}: expected a JSON array of objects, found {type(value).__name__}")
    return [(f"item {i}", item if isinstance(item, dict) else {"__not_object__": item})
            for i, item in enumerate(value, start=1)]


def text_records(text: str, unit: str, prefix: str) -> list[tuple[str, dict]]:
    """Documents of a plain-text file: the whole file, each blank-line paragraph, or each line."""
    if unit == "file":
        return [(f"{prefix}line 1", {"text": text})] if text.strip() else []
    lines = text.splitlines()
    if unit == "line":
        return [(f"{prefix}line {i}", {"text": line}) for i, line in enumerate(lines, 1) if line.strip()]
    records, start, block = [], 0, []
    for number, line in enumerate([*lines, ""], start=1):
        if line.strip():
            start = start or number
            block.append(line)
        elif block:
            records.append((f"{prefix}line {start}", {"text": "\n".join(block)}))
            start, block = 0, []
    return records


def read_text_folder(folder: Path, encoding: str, text_unit: str, bad: BadRows) -> Table:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise DomaintuneError(f"{folder}: no .txt or .md files found (and not an HF save_to_disk folder)")
    digest = hashlib.sha256()
    records = []
    for path in files:
        data = path.read_bytes()
        relative = path.relative_to(folder).as_posix()
        digest.update(relative.encode() + b"\0" + _sha256(data).encode())
        text, _ = decode_bytes(data, encoding, f"{folder.name}/{relative}")
        records += text_records(text, text_unit, f"{relative} ")
    return Table(folder.name, digest.hexdigest(), records, plain_text=True)


def _parquet_records(path: Path) -> list[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DomaintuneError(f"{path.name}: cannot be read as Parquet ({exc})") from None
    return [(f"row {i}", row) for i, row in enumerate(rows, start=1)]


def read_hf_folder(folder: Path) -> dict[str, Table]:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    from datasets import Dataset, load_from_disk

    loaded = load_from_disk(str(folder))
    parts = {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    if "train" not in parts:
        raise DomaintuneError(f"{folder}: the DatasetDict has no 'train' split (splits: {', '.join(parts)})")
    tables = {}
    for split in ("train", "test"):
        if split in parts:
            dataset = parts[split]
            origin = folder.name if split == "train" else f"{folder.name}/test"
            records = [(f"row {i}", row) for i, row in enumerate(dataset, start=1)]
            tables[split] = Table(origin, dataset._fingerprint, records)
    return tables
