"""The CLI is thin: it parses, calls the stage function and turns user errors into one line + exit 2."""

import subprocess
import sys

from cli_errors import one_error_line
from conftest import write_csv
from domaintune.cli.main import main


def test_config_typo_exits_2_with_one_line(capsys):
    assert main(["config", "train.lora.rnak=16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "domaintune config: error: config: unknown key 'train.lora.rnak' (did you mean 'train.lora.r'?)"


def test_config_prints_resolved_yaml(capsys):
    assert main(["config", "train.lora.r=12"]) == 0
    assert "r: 12" in capsys.readouterr().out


def test_prepare_bad_column_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DOMAINTUNE_CACHE", str(tmp_path / "cache"))  # as on a fresh machine: nothing converted yet
    path = write_csv(tmp_path / "r.csv", [{"body": "x", "rating": "positive"}])
    code = main(["prepare", f"data.source={path}", f"data.output_dir={tmp_path / 'out'}"])
    assert code == 2 and "no column 'review'" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_missing_model_one_line(tmp_path, capsys):
    # generate needs no prepared data (evaluate checks the data first, before loading any model)
    assert main(["generate", "--text", "fine", f"model.name={tmp_path / 'nowhere'}"]) == 2
    assert one_error_line(capsys).startswith(f"domaintune generate: error: model '{tmp_path / 'nowhere'}'")


def test_unexpected_positional(capsys):
    assert main(["train", "oops"]) == 2
    assert one_error_line(capsys) == "domaintune train: error: unexpected argument 'oops' (overrides are key=value)"


def test_python_dash_m_runs():
    out = subprocess.run([sys.executable, "-m", "domaintune", "--help"], capture_output=True, text=True, check=True)
    for verb in ("prepare", "train", "evaluate", "baseline", "compare", "merge", "export", "generate", "demo",
                 "serve", "feedback"):
        assert verb in out.stdout


def test_merge_and_export_name_a_missing_run_in_one_line(tmp_path, capsys):
    assert main(["merge", str(tmp_path / "gone")]) == 2
    assert main(["export", str(tmp_path / "gone"), "--format", "gguf"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"domaintune merge: error: run folder not found: {tmp_path / 'gone'}",
                   f"domaintune export: error: run folder not found: {tmp_path / 'gone'}"]


def test_compare_cli_prints_the_table(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nothing"), "--no-latency"]) == 2
    assert one_error_line(capsys) == f"domaintune compare: error: {tmp_path / 'nothing'}: folder not found"


def test_export_types_are_checked_before_anything_loads(tmp_path, capsys):
    assert main(["export", str(tmp_path / "gone"), "--types", "f16,bf16"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "domaintune export: error: export --types: 'bf16' is not a type; choose from f32, f16, q8_0 (comma-separated)"]
