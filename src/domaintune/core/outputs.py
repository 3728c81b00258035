"""Output folders: which existing folder a command may replace, and which it must leave alone.

Every folder domaintune writes holds a marker file, `.domaintune-output.json`, naming its kind (a run,
prepared data, ...). An existing output folder is replaced only when its marker names the kind being
written, or when it is empty; any other existing folder (the user's, or domaintune's output of another
kind) is refused before any model loads, unless the command was given `--overwrite` (`overwrite=True`
in Python). An output that is, contains or lies inside one of the command's inputs is refused even
then: replacing it would delete the input.

Folders written before the marker existed are recognised by files only domaintune writes there
(`LEGACY_SIGNATURES`), so that a run folder of an earlier version can still be trained again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json, remove_path, replace_dir, staged_dir
from domaintune.core.schema import Config

MARKER = ".domaintune-output.json"
KINDS = {
    "prepared": "prepared data",
    "run": "run folder",
    "evaluation": "base-model evaluation",
    "baseline": "TF-IDF baseline",
    "compare": "comparison report",
    "merged": "merged model",
    "export": "GGUF export",
    "feedback-export": "feedback export",
    "sweep": "sweep folder",
}
# Files that all stand in a folder of that kind written before markers existed; the first match wins.
LEGACY_SIGNATURES = (
    ("baseline", ("run_card.json", "model.skops")),  # before "run": a baseline folder has a run card too
    ("run", ("run_card.json", "config.yaml")),
    ("prepared", ("data_card.json", "data_card.md", "train.jsonl")),
    ("merged", ("domaintune_merged_from.json",)),
    ("export", ("export_card.json", "model-*.gguf")),
    ("feedback-export", ("export_card.json", "preference.jsonl", "sft.jsonl")),
    ("compare", ("comparison.json", "report.md", "report.html")),
    ("sweep", ("study.sqlite", "sweep.lock")),
)


def output_kind(folder: str | Path) -> str | None:
    """The kind of domaintune output `folder` holds (from its marker, or the files of an older output)."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return None
    if (folder / MARKER).is_file():
        return _json_field(folder / MARKER, "kind")
    for kind, names in LEGACY_SIGNATURES:
        if all(any(folder.glob(name)) for name in names):
            return kind
    if (folder / "config.yaml").is_file() and _json_field(folder / "metrics.json", "target") == "base":
        return "evaluation"
    return None


def _json_field(path: Path, key: str) -> str | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def mark_output(folder: Path, kind: str) -> None:
    atomic_write_json(folder / MARKER, {"kind": kind, "written_by": "domaintune",
                                        "note": f"a later domaintune command writing a {KINDS[kind]} here "
                                                "replaces this folder"})


def check_output(folder: str | Path, kind: str, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                 setting: str = "output folder") -> Path:
    """Refuse, in one line, an output that would delete an input or a folder domaintune did not make.

    `setting` names where the user chose the path (`--out`, `train.output_dir`), for the error's way out.
    """
    folder = Path(folder)
    _refuse_input_overlap(folder, inputs, setting)
    _refuse_foreign(folder, kind, overwrite, setting)
    return folder


def _refuse_input_overlap(folder: Path, inputs: Iterable[str | Path | None], setting: str) -> None:
    out = folder.resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if out == source:
            relation = "is"
        elif source.is_relative_to(out):
            relation = "contains"
        elif out.is_relative_to(source):
            relation = "lies inside"
        else:
            continue
        raise DomaintuneError(f"{folder}: the output {relation} the input {given}, and writing it would replace "
                              f"that input; set another {setting} (--overwrite does not change this)")


def _refuse_foreign(folder: Path, kind: str, overwrite: bool, setting: str) -> None:
    if overwrite or not (folder.exists() or folder.is_symlink()):
        return
    found = output_kind(folder)
    if found == kind or (found is None and folder.is_dir() and not folder.is_symlink() and _is_empty(folder)):
        return
    there = _what_is_there(folder, found)
    raise DomaintuneError(f"{folder} already exists and is not domaintune's {KINDS[kind]} ({there}); "
                          f"set another {setting}, or pass --overwrite (overwrite=True in Python) to replace "
                          "it and everything in it")


def _is_empty(folder: Path) -> bool:
    return next(folder.iterdir(), None) is None


def _what_is_there(folder: Path, found: str | None) -> str:
    if found:
        return f"it holds domaintune's {KINDS[found]}"
    if folder.is_symlink():
        return "it is a symbolic link"
    if not folder.is_dir():
        return "it is a file"
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"it holds {shown}"


@contextmanager
def staged_output(final: str | Path, kind: str, overwrite: bool = False) -> Iterator[Path]:
    """`io.staged_dir` for an output: the new folder is marked with its kind, and `final` is checked once
    more just before it is replaced (something may have appeared there while the command ran)."""
    final = Path(final)
    with staged_dir(final) as staging:
        yield staging
        mark_output(staging, kind)
        _refuse_foreign(final, kind, overwrite, "output folder")


def replace_output(work: Path, final: str | Path, kind: str, overwrite: bool = False) -> Path:
    """Mark a finished work folder and move it into place (train's `.NAME.partial`)."""
    final = Path(final)
    mark_output(work, kind)
    _refuse_foreign(final, kind, overwrite, "output folder")
    replace_dir(work, final)
    return final


def open_output_in_place(folder: str | Path, kind: str, inputs: Iterable[str | Path | None] = (),
                         overwrite: bool = False, setting: str = "output folder") -> Path:
    """For an output built where it stands (a resumable sweep): a folder of `kind` is kept and added to;
    anything else there is removed first, which `check_output` allows only with `overwrite`."""
    folder = check_output(folder, kind, inputs, overwrite, setting)
    if (folder.exists() or folder.is_symlink()) and output_kind(folder) != kind:
        remove_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARKER).is_file():
        mark_output(folder, kind)
    return folder


def sibling_output(run_dir: Path, suffix: str) -> Path:
    """RUN-SUFFIX beside a run: a default output never lies inside the run it is made from, where
    training the run again would delete it."""
    run_dir = run_dir if run_dir.name not in ("", "..") else run_dir.resolve()
    return run_dir.with_name(f"{run_dir.name}-{suffix}")


def config_inputs(cfg: Config) -> list[Path]:
    """The inputs every config-driven command has: its YAML file and a local base model folder."""
    candidates = [cfg.source_file, cfg.model.name]
    return [Path(c) for c in candidates if c and Path(c).exists()]


def data_inputs(cfg: Config) -> list[Path]:
    """`prepare`'s sources that are paths (a named dataset is not)."""
    data = cfg.data
    candidates = [data.source, data.test_source, *(s.path for s in data.sources)]
    return [Path(c) for c in candidates if c and Path(c).exists()]
