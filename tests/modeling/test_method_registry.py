"""The registry of training methods: one entry per `train.method` name, looked up instead of branched on."""

import pytest

from domaintune.core.config import config_reference, load_config
from domaintune.core.errors import DomaintuneError
from domaintune.core.method_names import METHOD_NAMES
from domaintune.modeling import methods
from domaintune.modeling.methods.lora import wrap_lora


def test_every_name_the_config_accepts_is_a_registered_method():
    assert methods.names() == list(METHOD_NAMES)


def test_register_refuses_a_name_the_config_does_not_declare():
    with pytest.raises(ValueError, match="not declared in core/method_names.py"):
        methods.register(methods.Method("vera", 1e-3, "adapter", wrap_lora))
    assert "vera" not in methods.names()


def test_unknown_method_is_one_line_with_choices_and_suggestion():
    with pytest.raises(DomaintuneError) as error:
        load_config(None, ["train.method=pisa"])
    message = str(error.value)
    assert "\n" not in message and "did you mean 'pissa'?" in message
    assert all(name in message for name in METHOD_NAMES)
    with pytest.raises(DomaintuneError, match=r"'lorra' is not a method \(did you mean 'lora'\?\)"):
        methods.get("lorra")


def test_config_reference_lists_every_method():
    row = next(r for r in config_reference() if r.startswith("| `train.method` |"))
    assert all(f"`{name}`" in row for name in METHOD_NAMES)


def test_what_each_method_saves():
    assert {name: methods.saved_as(name) for name in METHOD_NAMES} == {
        "lora": "adapter", "dora": "adapter", "qlora": "adapter", "pissa": "adapter", "dpo": "adapter",
        "freeze": "model", "full": "model",
    }
    assert methods.saved_as("base") is None and methods.saved_as("tfidf-logreg") is None
