"""No command deletes what it did not make (outputs.py).

Every verb that writes is pointed at a folder holding a file of the user's: it must stop with one line on
stderr, before any model work, and leave the file where it was. Replacing domaintune's own output of the
same kind works; another kind, or a plain folder, needs --overwrite; an output that is, holds or lies
inside an input is refused even then.
"""

import json
import sqlite3
from pathlib import Path

import pytest

from cards import write_fake_run
from cli_errors import one_error_line
from domaintune.cli.main import main
from domaintune.core.config import config_to_yaml, load_config
from domaintune.core.errors import DomaintuneError
from domaintune.core.outputs import MARKER, mark_output, open_output_in_place, output_kind, staged_output
from domaintune.serving.feedback_export import run_feedback_export


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    return path


def _fake_lora_run(folder: Path) -> Path:
    """Enough of a run folder for merge and export to reach their output check (they stop there)."""
    folder.mkdir(parents=True)
    write_fake_run(folder)
    (folder / "config.yaml").write_text(config_to_yaml(load_config(None)))
    return folder


def _votes_db(path: Path) -> Path:
    from domaintune.serving.feedback_store import FeedbackStore

    FeedbackStore(path)  # an empty votes database: the export writes empty files
    return path


def _sweep_config(path: Path) -> Path:
    path.write_text("sweep:\n  trials: 2\n  pruner: {type: none}\n  space:\n    train.lora.r: [4, 8]\n")
    return path


# verb -> argv that writes into MINE (the tmp_path is `t`); every one must be refused before any model work.
WRITES_INTO_MINE = {
    "prepare": lambda t, mine: ["prepare", f"data.source={t / 'reviews.csv'}", f"data.output_dir={mine}"],
    "train": lambda t, mine: ["train", f"train.output_dir={mine}", f"data.output_dir={t / 'prepared'}"],
    "evaluate": lambda t, mine: ["evaluate", f"evaluate.base_output_dir={mine}", f"data.output_dir={t / 'prepared'}"],
    "baseline": lambda t, mine: ["baseline", f"evaluate.baseline_output_dir={mine}",
                                 f"data.output_dir={t / 'prepared'}"],
    "compare": lambda t, mine: ["compare", str(t / "runs" / "base"), "--out", str(mine), "--no-latency"],
    "merge": lambda t, mine: ["merge", str(_fake_lora_run(t / "runs" / "lora")), "--out", str(mine)],
    "export": lambda t, mine: ["export", str(_fake_lora_run(t / "runs" / "lora")), "--out", str(mine)],
    "feedback export": lambda t, mine: ["feedback", "export", "--db", str(_votes_db(t / "votes.sqlite")),
                                        "--out", str(mine)],
    "sweep": lambda t, mine: ["sweep", str(_sweep_config(t / "sweep.yaml")), f"sweep.output_dir={mine}"],
    # The demo's folders are fixed below the working directory; its LoRA run folder is the user's here.
    "demo": lambda t, mine: ["demo"],
}


@pytest.mark.parametrize("verb", list(WRITES_INTO_MINE))
def test_a_folder_of_the_users_survives_every_writing_verb(verb, reviews_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = _user_folder(tmp_path / "runs" / "demo" / "lora" if verb == "demo" else tmp_path / "mine")
    assert main(WRITES_INTO_MINE[verb](tmp_path, mine)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{Path('runs/demo/lora') if verb == 'demo' else mine} already exists and is not domaintune's" in err
    assert "it holds notes.txt" in err and "--overwrite" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"


def _export_into(out: Path, db: Path, *flags: str) -> int:
    return main(["feedback", "export", "--db", str(db), "--out", str(out), *flags])


def test_domaintunes_own_output_of_the_same_kind_is_replaced(tmp_path, capsys):
    db = _votes_db(tmp_path / "votes.sqlite")
    out = tmp_path / "feedback"
    assert _export_into(out, db) == 0
    assert json.loads((out / MARKER).read_text())["kind"] == "feedback-export"
    (out / "stale.jsonl").write_text("from the first export\n")
    assert _export_into(out, db) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "export_card.json", "preference.jsonl", "sft.jsonl"]


def test_an_output_of_an_earlier_version_is_recognised_by_its_files(tmp_path, capsys):
    """Folders written before the marker existed carry files only domaintune writes; they are replaced."""
    db = _votes_db(tmp_path / "votes.sqlite")
    old = tmp_path / "old-export"
    old.mkdir()
    for name in ("export_card.json", "preference.jsonl", "sft.jsonl"):
        (old / name).write_text("{}\n")
    assert output_kind(old) == "feedback-export"
    assert _export_into(old, db) == 0, capsys.readouterr().err
    assert (old / MARKER).is_file()


def test_another_kinds_output_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    db = _votes_db(tmp_path / "votes.sqlite")
    run = tmp_path / "runs" / "lora"
    run.mkdir(parents=True)
    mark_output(run, "run")
    (run / "adapter.safetensors").write_text("weights")
    assert _export_into(run, db) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "it holds domaintune's run folder" in err
    assert (run / "adapter.safetensors").is_file()
    assert _export_into(run, db, "--overwrite") == 0
    assert not (run / "adapter.safetensors").exists() and output_kind(run) == "feedback-export"


def test_overwrite_replaces_a_plain_folder(tmp_path, capsys):
    db = _votes_db(tmp_path / "votes.sqlite")
    mine = _user_folder(tmp_path / "mine")
    assert _export_into(mine, db, "--overwrite") == 0, capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == [MARKER, "export_card.json", "preference.jsonl", "sft.jsonl"]
    also_mine = _user_folder(tmp_path / "also-mine")
    with pytest.raises(DomaintuneError, match="also-mine already exists"):
        run_feedback_export(db, also_mine)
    run_feedback_export(db, also_mine, overwrite=True)  # the Python API's switch
    assert not (also_mine / "notes.txt").exists()


def test_an_empty_folder_is_used(tmp_path):
    db = _votes_db(tmp_path / "votes.sqlite")
    (tmp_path / "empty").mkdir()
    assert _export_into(tmp_path / "empty", db) == 0


@pytest.mark.parametrize(("argv", "relation"), [
    # the issue's own two commands: the votes database inside --out, and a run exported onto itself
    (lambda t: ["feedback", "export", "--db", str(_votes_db(t / "runs" / "feedback.sqlite")), "--out", str(t / "runs")],
     "contains the input"),
    (lambda t: ["export", str(_fake_lora_run(t / "runs" / "lora")), "--out", str(t / "runs" / "lora")], "is the input"),
    (lambda t: ["merge", str(_fake_lora_run(t / "runs" / "lora")), "--out", str(t / "runs" / "lora" / "merged")],
     "lies inside the input"),
    (lambda t: ["train", f"data.output_dir={t / 'runs' / 'prepared'}", f"train.output_dir={t / 'runs'}"],
     "contains the input"),
    (lambda t: ["prepare", "-c", str(_sweep_config(t / "runs" / "c.yaml")), f"data.output_dir={t / 'runs'}"],
     "contains the input"),
])
def test_an_output_over_an_input_is_refused_even_with_overwrite(argv, relation, tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    args = [*argv(tmp_path), "--overwrite"]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and relation in err and "--overwrite does not change this" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_merge_and_export_default_beside_the_run(tmp_path, capsys):
    """The default output is RUN-merged / RUN-gguf: inside the run it would be refused as inside an input."""
    run = _fake_lora_run(tmp_path / "lora")
    for verb, suffix in (("merge", "merged"), ("export", "gguf")):
        _user_folder(tmp_path / f"lora-{suffix}")
        assert main([verb, str(run)]) == 2
        assert f"lora-{suffix} already exists" in one_error_line(capsys)


def test_a_folder_that_appears_while_the_command_runs_is_not_replaced(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(DomaintuneError, match="already exists and is not domaintune's comparison report"):
        with staged_output(final, "compare") as folder:
            (folder / "report.md").write_text("new")
            _user_folder(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (final / "notes.txt").is_file()


def test_a_sweep_folder_is_kept_and_a_plain_one_replaced_only_with_overwrite(tmp_path):
    sweep = open_output_in_place(tmp_path / "sweep", "sweep")
    (sweep / "study.sqlite").write_bytes(b"")
    assert open_output_in_place(sweep, "sweep") == sweep and (sweep / "study.sqlite").is_file(), "resumed as it is"
    mine = _user_folder(tmp_path / "mine")
    with pytest.raises(DomaintuneError, match="mine already exists"):
        open_output_in_place(mine, "sweep")
    assert (mine / "notes.txt").is_file()
    open_output_in_place(mine, "sweep", overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == [MARKER]


def test_a_symbolic_link_is_refused_and_overwrite_replaces_the_link_only(tmp_path):
    db = _votes_db(tmp_path / "votes.sqlite")
    target = _user_folder(tmp_path / "elsewhere")
    (tmp_path / "link").symlink_to(target)
    assert _export_into(tmp_path / "link", db) == 2
    assert _export_into(tmp_path / "link", db, "--overwrite") == 0
    assert not (tmp_path / "link").is_symlink() and (target / "notes.txt").read_text() == "mine"


def test_the_votes_database_is_still_readable_after_a_refusal(tmp_path):
    db = _votes_db(tmp_path / "runs" / "feedback.sqlite")
    assert main(["feedback", "export", "--db", str(db), "--out", str(tmp_path / "runs")]) == 2
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from sqlite_master").fetchone()[0] > 0
