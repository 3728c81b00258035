from pathlib import Path

import pytest
import yaml

from domaintune.core.config import config_reference, config_to_yaml, load_config, parse_overrides
from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import Config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_validate():
    cfg = load_config()
    assert cfg.model.name == "smollm2-135m"
    assert cfg.train.method == "lora"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_shipped_configs_exist():
    assert len(list((ROOT / "configs").glob("*.yaml"))) >= 3


def test_the_demo_reads_the_shipped_demo_yaml():
    from domaintune.workflows.demo import demo_config

    shipped = ROOT / "src" / "domaintune" / "workflows" / "demo.yaml"
    assert (ROOT / "configs" / "demo.yaml").resolve() == shipped.resolve(), "configs/demo.yaml links to the package's"
    cfg = demo_config(["train.lora.r=4"])
    assert Path(cfg.source_file).resolve() == shipped.resolve()
    assert cfg.model_dump() == load_config(shipped, ["train.lora.r=4"]).model_dump()
    assert (cfg.train.lora.r, cfg.train.output_dir, cfg.train.loss_on) == (4, "runs/demo/lora", "all")


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(DomaintuneError, match=r"unknown key 'train\.lora\.rnak' \(did you mean 'train\.lora\.r'\?\)"):
        load_config(None, ["train.lora.rnak=16"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  methd: full\n")
    expected = r"c\.yaml: unknown key 'train\.methd' \(did you mean 'train\.method'\?\)"
    with pytest.raises(DomaintuneError, match=expected):
        load_config(path)


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(DomaintuneError, match=r"key 'train\.lora\.r' expects int, got 'abc'"):
        load_config(None, ["train.lora.r=abc"])


def test_wrong_choice_names_key():
    with pytest.raises(DomaintuneError, match=r"key 'train\.method'"):
        load_config(None, ["train.method=qlorax"])


def test_overrides_are_nested_and_typed():
    assert parse_overrides(["train.lora.r=16", "train.learning_rate=1e-4", "data.labels=[a, b]"]) == {
        "train": {"lora": {"r": 16}, "learning_rate": 1e-4}, "data": {"labels": ["a", "b"]}
    }
    cfg = load_config(None, ["train.lora.r=16", "train.method=full"])
    assert cfg.train.lora.r == 16 and cfg.train.method == "full"


def test_override_wins_over_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lora:\n    r: 4\n    alpha: 8\n")
    cfg = load_config(path, ["train.lora.r=32"])
    assert (cfg.train.lora.r, cfg.train.lora.alpha) == (32, 8)


@pytest.mark.parametrize("bad", ["train.lora.r", "=3"])
def test_malformed_override(bad):
    with pytest.raises(DomaintuneError, match="key=value"):
        load_config(None, [bad])


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(DomaintuneError, match="top level must be a mapping"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(DomaintuneError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips():
    cfg = load_config(None, ["train.lora.r=5", "prompt.system=hi"])
    assert Config.model_validate(yaml.safe_load(config_to_yaml(cfg))) == cfg


def test_reference_lists_every_leaf_with_help():
    rows = config_reference()
    keys = [row.split("`")[1] for row in rows]
    assert "train.lora.r" in keys and "data.source" in keys
    assert all(row.rstrip(" |").split("|")[-1].strip() for row in rows), "every field needs a description"


def test_readme_reference_is_current():
    """The whole tail of README after the reference's header is generated: no row missing, none stale."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    header = "| key | default | description |\n|---|---|---|\n"
    assert readme.count(header) == 1
    assert readme.split(header)[1] == "\n".join(config_reference()) + "\n", "README is stale: run `make docs`"
