"""End-to-end on the real embedded SmolLM2-135M-Instruct and drug reviews, a handful of steps.

These run in CI (the model installs from the package index); they are not skipped.
"""

import json
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from domaintune import load_config, run_compare, run_evaluate, run_prepare, run_train
from domaintune.models import embedded_gguf, resolve_model
from domaintune.runs import load_run_model

pytestmark = pytest.mark.e2e


def test_embedded_model_is_converted_once_to_a_plain_hf_folder():
    folder = resolve_model("smollm2-135m")
    names = {p.name for p in Path(folder).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "chat_template.jinja" in names or "chat_template" in json.loads(
        (Path(folder) / "tokenizer_config.json").read_text())
    config = json.loads((Path(folder) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    started = time.perf_counter()
    assert resolve_model("smollm2-135m") == folder
    assert resolve_model(str(embedded_gguf("smollm2-135m"))) == folder, "the .gguf path shares the cache"
    assert time.perf_counter() - started < 5


def test_real_model_lora_few_steps(tmp_path):
    cfg = load_config(None, [
        f"data.output_dir={tmp_path / 'prepared'}",
        f"train.output_dir={tmp_path / 'lora'}",
        f"evaluate.base_output_dir={tmp_path / 'base'}",
        "train.max_steps=2", "train.batch_size=4", "train.max_train_rows=16", "train.max_length=96",
        "evaluate.max_examples=6", "evaluate.max_length=96", "evaluate.batch_size=6",
    ])
    run_prepare(cfg)
    run_dir = run_train(cfg)
    base = run_evaluate(cfg)
    tuned = run_evaluate(cfg, str(run_dir))
    assert 1 < base["perplexity"] < 1000 and 1 < tuned["perplexity"] < 1000
    assert tuned["perplexity"] != base["perplexity"]

    ours, tok = load_run_model(str(run_dir), cfg)
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m")), run_dir / "adapter"
    )
    ids = tok("The tablets helped my migraine.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(ours.eval()(input_ids=ids).logits, plain.eval()(input_ids=ids).logits)

    report = run_compare([tmp_path / "base", run_dir], tmp_path / "cmp", ["base", "lora"]).read_text()
    assert "| lora |" in report
