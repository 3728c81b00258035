"""Reading sources into records: (where, fields) pairs that remember their line for the data card.

Records are produced lazily, one at a time, straight from the file (CSV/TSV, JSONL, Parquet, text
paragraphs or lines, HF folders), so a source larger than memory streams into the Arrow files that the
later steps work on; only a JSON array and a single document of text are read whole.

Malformed input (wrong column count, broken quoting, invalid JSON lines) goes to `BadRows`, which
counts it or, with `data.strict`, stops at the first one. The encoding is settled before reading: UTF-8
(with or without BOM) first, then cp949 (a superset of EUC-KR, common in Korean exports), then
charset-normalizer.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from domaintune.core.errors import DomaintuneError
from domaintune.data.report import BadRows

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet", *TEXT_SUFFIXES)
_CHUNK = 1 << 20
_SNIFF_BYTES = 8 << 20  # charset-normalizer guesses from the start of a file


@dataclass
class Table:
    """Records read from one source; `origin` names it in errors, row ids and the data card.

    `records` may be a generator, read once; `count` is the number of records read so far.
    """

    origin: str
    fingerprint: str
    records: Iterable[tuple[str, dict]] = field(default_factory=list)
    plain_text: bool = False  # records carry only {"text"}: no columns to map
    encoding: str | None = None
    count: int = 0


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _decodes(opener: Callable[[], BinaryIO], codec: str) -> bool:
    """Whether the whole stream decodes strictly with `codec`, read chunk by chunk."""
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    try:
        with opener() as handle:
            while chunk := handle.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _few_bad_lines(opener: Callable[[], BinaryIO]) -> bool:
    """UTF-8 with at most 1% of lines (at least one) holding undecodable bytes."""
    lines = damaged = 0
    with io.TextIOWrapper(opener(), encoding="utf-8-sig", errors="replace") as handle:
        for line in handle:
            lines += 1
            damaged += "\ufffd" in line
    return damaged <= max(1, lines // 100)


def detect_encoding(opener: Callable[[], BinaryIO], encoding: str, origin: str) -> tuple[str, str, str]:
    """How to decode a file: (Python codec, error mode, name for the card).

    Order: UTF-8 (BOM or not); cp949 then EUC-KR, which reject UTF-8 Korean within a few bytes, so a
    strict success means a legacy Korean file; then UTF-8 with a few corrupt bytes (the damaged rows
    are caught as binary garbage later); only then charset-normalizer's guess.
    """
    if encoding != "auto":
        try:
            if not _decodes(opener, encoding):
                with opener() as handle:
                    handle.read().decode(encoding)  # raises, with the position of the first bad byte
        except (UnicodeDecodeError, LookupError) as exc:
            raise DomaintuneError(f"{origin}: cannot be decoded as {encoding} ({exc}); set data.encoding; "
                                  "see docs/troubleshooting.md#garbled-korean-text") from None
        return encoding, "strict", encoding
    if _decodes(opener, "utf-8-sig"):
        return "utf-8-sig", "strict", "utf-8"
    for codec in ("cp949", "euc-kr"):
        if _decodes(opener, codec):
            return codec, "strict", codec
    if _few_bad_lines(opener):
        return "utf-8-sig", "replace", "utf-8"
    from charset_normalizer import from_bytes

    with opener() as handle:
        best = from_bytes(handle.read(_SNIFF_BYTES)).best()
    if best is None:
        raise DomaintuneError(f"{origin}: the text encoding could not be detected; set data.encoding; "
                              "see docs/troubleshooting.md#garbled-korean-text")
    return best.encoding, "strict", best.encoding


def decode_bytes(data: bytes, encoding: str, origin: str) -> tuple[str, str]:
    """Decode bytes held in memory; returns (text, encoding name)."""
    codec, errors, name = detect_encoding(lambda: io.BytesIO(data), encoding, origin)
    return data.decode(codec, errors), name


def read_source(path: str | Path, encoding: str, text_unit: str, bad: BadRows) -> dict[str, Table]:
    """Open one file or folder; returns {"train": Table} plus "test" for an HF DatasetDict that has one.

    Files are checked (existence, type, encoding) here; their records are read when iterated.
    """
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
    table = Table(path.name, _file_sha256(path))
    if suffix == ".parquet":
        table.records = _parquet_records(path)
        return {"train": table}
    codec, errors, table.encoding = detect_encoding(lambda: path.open("rb"), encoding, path.name)

    def text() -> TextIO:
        # newline="" hands line ends to the csv module untouched (quoted fields may hold them)
        return path.open(encoding=codec, errors=errors, newline="" if suffix in (".csv", ".tsv", ".tab") else None)

    if suffix in (".csv", ".tsv", ".tab"):
        table.records = _reading(text, lambda h: csv_records(h, "," if suffix == ".csv" else "\t", path.name, bad))
    elif suffix in (".jsonl", ".ndjson"):
        table.records = _reading(text, lambda h: jsonl_records(h, path.name, bad))
    elif suffix == ".json":
        table.records = _reading(text, lambda h: json_records(h.read(), path.name))
    else:
        table.records = _reading(text, lambda h: text_records(h, text_unit, ""))
        table.plain_text = True
    return {"train": table}


def _reading(opener: Callable[[], TextIO], records: Callable[[TextIO], Iterable]) -> Iterator:
    """Records of a file opened only when the first one is wanted, and closed after the last."""
    with opener() as handle:
        yield from records(handle)


# Python's csv module stops a field at 128 KiB and then reads the rest of it as new rows. Fields are
# read whole up to this many characters (a document far longer than any training length); a longer
# one is counted as a bad row and the rest of its record skipped.
FIELD_LIMIT = 16 << 20


class _RecordLines:
    """The lines of a file as csv.reader draws them, keeping those of the record being read."""

    def __init__(self, handle: TextIO):
        self.handle, self.record, self.count = iter(handle), [], 0

    def __iter__(self) -> _RecordLines:
        return self

    def __next__(self) -> str:
        line = next(self.handle)
        self.record.append(line)
        self.count += 1
        return line


def _skip_rest_of_record(lines: _RecordLines, delimiter: str) -> None:
    """Read past the end of a record whose field went over FIELD_LIMIT. Its lines are read again with each
    run of ordinary characters shrunk to one: only quotes, delimiters and line ends decide where a record
    ends, so the shrunk record ends on the same line, and none of its fields comes near the limit."""
    ordinary = re.compile(f'[^"{re.escape(delimiter)}\\r\\n]+')
    shrunk = (ordinary.sub("x", line) for line in itertools.chain(list(lines.record), lines))
    next(csv.reader(shrunk, delimiter=delimiter, strict=True), None)


def csv_records(handle: TextIO, delimiter: str, origin: str, bad: BadRows) -> Iterator[tuple[str, dict]]:
    """Rows of a CSV/TSV as dicts keyed by the header; quoted fields may span lines."""
    csv.field_size_limit(FIELD_LIMIT)  # process-wide, and only ever raised from the default
    lines = _RecordLines(handle)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DomaintuneError(f"{origin}: the file is empty") from None
    except csv.Error as exc:
        raise DomaintuneError(f"{origin}: line 1: the header cannot be parsed ({exc})") from None
    header = [name.strip() for name in header]
    while True:
        start = lines.count + 1
        lines.record = []
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad.add(origin, f"line {start}", _unreadable_record(exc, lines, start, delimiter))
            continue
        if not row or row == [""]:
            continue  # a blank line is not a row
        if len(row) != len(header):
            span = f"lines {start}-{lines.count}" if lines.count > start else f"line {start}"
            bad.add(origin, span, f"expected {len(header)} columns, found {len(row)}", delimiter.join(row))
            continue
        yield f"line {start}", dict(zip(header, row, strict=True))


def _unreadable_record(exc: csv.Error, lines: _RecordLines, start: int, delimiter: str) -> str:
    """Why the record from line `start` is lost; a field over the limit is first read past."""
    if str(exc).startswith("field larger than field limit"):
        try:
            _skip_rest_of_record(lines, delimiter)
        except csv.Error:
            return f"a field over {FIELD_LIMIT} characters whose quote never closes (lines {start}-{lines.count} lost)"
        return f"a field over {FIELD_LIMIT} characters (lines {start}-{lines.count} skipped)"
    if lines.count > start:
        return f"broken quoting: a quote opened here never closes (lines {start}-{lines.count} lost)"
    return f"broken quoting ({exc})"


def jsonl_records(lines: Iterable[str], origin: str, bad: BadRows) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
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
        yield f"line {number}", value


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


def text_records(handle: TextIO, unit: str, prefix: str) -> Iterator[tuple[str, dict]]:
    """Documents of a plain-text file: the whole file, each blank-line paragraph, or each line."""
    if unit == "file":
        text = handle.read()
        if text.strip():
            yield f"{prefix}line 1", {"text": text}
        return
    start, block = 0, []
    for number, line in enumerate(_with_end(handle), start=1):
        line = line.rstrip("\n")
        if unit == "line":
            if line.strip():
                yield f"{prefix}line {number}", {"text": line}
        elif line.strip():
            start = start or number
            block.append(line)
        elif block:
            yield f"{prefix}line {start}", {"text": "\n".join(block)}
            start, block = 0, []


def _with_end(lines: Iterable[str]) -> Iterator[str]:
    """The lines, then one empty line that closes the last paragraph."""
    yield from lines
    yield ""


def read_text_folder(folder: Path, encoding: str, text_unit: str, bad: BadRows) -> Table:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise DomaintuneError(f"{folder}: no .txt or .md files found (and not an HF save_to_disk folder)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + _file_sha256(path).encode())

    def records() -> Iterator[tuple[str, dict]]:
        for path in files:  # one file in memory at a time
            relative = path.relative_to(folder).as_posix()
            text, _ = decode_bytes(path.read_bytes(), encoding, f"{folder.name}/{relative}")
            yield from text_records(io.StringIO(text), text_unit, f"{relative} ")

    return Table(folder.name, digest.hexdigest(), records(), plain_text=True)


def _parquet_records(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1000):
            for row in batch.to_pylist():
                number += 1
                yield f"row {number}", row
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DomaintuneError(f"{path.name}: cannot be read as Parquet ({exc})") from None


def read_hf_folder(folder: Path) -> dict[str, Table]:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (memory-mapped)."""
    from datasets import Dataset, load_from_disk

    loaded = load_from_disk(str(folder))
    parts = {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    if "train" not in parts:
        raise DomaintuneError(f"{folder}: the DatasetDict has no 'train' split (splits: {', '.join(parts)})")
    tables = {}
    for split in ("train", "test"):
        if split in parts:
            origin = folder.name if split == "train" else f"{folder.name}/test"
            tables[split] = Table(origin, parts[split]._fingerprint, _dataset_records(parts[split]))
    return tables


def _dataset_records(dataset) -> Iterator[tuple[str, dict]]:
    number = 0
    for batch in dataset.iter(batch_size=1000):
        columns = list(batch)
        for values in zip(*batch.values(), strict=True):
            number += 1
            yield f"row {number}", dict(zip(columns, values, strict=True))
