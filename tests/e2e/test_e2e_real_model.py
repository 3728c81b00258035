"""End-to-end on the real embedded SmolLM2-135M-Instruct and drug reviews, a handful of steps.

These run in CI (the model installs from the package index); they are not skipped.
Training runs at `train.precision: auto`, as a user's would: bf16 on an AVX512-BF16 CPU, fp32 on an AVX2-only
one. The weights are fp32 masters either way, and evaluate, merge and every logit compared here run in fp32,
so the assertions hold on both kinds (the exactness tests in test_distributed/test_training_depth/test_compare
run both precisions on purpose).
"""

import json
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from domaintune import load_config, run_compare, run_evaluate, run_merge, run_prepare, run_train
from domaintune.data.prepare import read_split
from domaintune.evaluation.evaluate import general_passages
from domaintune.modeling.models import embedded_gguf, resolve_model
from domaintune.modeling.runs import load_run_model
from in_memory import LogitsAtTrainEnd
from independent import assert_same_perplexity, perplexity_by_hand

pytestmark = pytest.mark.e2e


def test_embedded_model_converts_once_with_equal_logits(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINTUNE_CACHE", str(tmp_path / "cache"))
    folder = resolve_model("smollm2-135m")
    assert Path(folder).is_relative_to(tmp_path / "cache")
    names = {p.name for p in Path(folder).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    config = json.loads((Path(folder) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    started = time.perf_counter()
    assert resolve_model("smollm2-135m") == folder
    assert resolve_model(str(embedded_gguf("smollm2-135m"))) == folder, "the .gguf path shares the cache"
    assert time.perf_counter() - started < 2, "a converted model is not converted again"

    gguf = embedded_gguf("smollm2-135m")
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok("Ibuprofen eased my back pain.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(direct(input_ids=ids).logits, converted(input_ids=ids).logits)


def test_real_model_lora_few_steps(tmp_path):
    cfg = load_config(None, [
        f"data.output_dir={tmp_path / 'prepared'}",
        f"train.output_dir={tmp_path / 'lora'}",
        f"evaluate.base_output_dir={tmp_path / 'base'}",
        "train.max_steps=2", "train.batch_size=4", "train.max_train_rows=16", "train.max_length=96",
        "evaluate.max_examples=6", "evaluate.max_length=96", "evaluate.batch_size=6", "evaluate.samples=1",
        "evaluate.sample_max_new_tokens=4",
    ])
    run_prepare(cfg)
    trained = LogitsAtTrainEnd({"input_ids": torch.tensor([[1, 2, 3]])})  # training precision: the weights
    run_dir = run_train(cfg, callbacks=[trained])
    base = run_evaluate(cfg)
    tuned = run_evaluate(cfg, str(run_dir))

    ours, tok = load_run_model(str(run_dir), cfg)
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m")), run_dir / "adapter"
    ).eval()
    loaded = dict(plain.named_parameters())
    assert trained.trainable and all(torch.equal(loaded[name], value) for name, value in trained.trainable.items()), \
        "the saved adapter holds the float32 weights the trainer ended with"
    ids = tok("The tablets helped my migraine.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(ours.eval()(input_ids=ids).logits, plain(input_ids=ids).logits)

    texts = [r["text"] for r in read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]]
    plain_base = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m")).eval()
    assert_same_perplexity(base, perplexity_by_hand(plain_base, tok, texts, cfg.evaluate.max_length))
    assert_same_perplexity(tuned, perplexity_by_hand(plain, tok, texts, cfg.evaluate.max_length))
    assert tuned["perplexity"] != base["perplexity"]
    general = general_passages(None)
    assert_same_perplexity(base, perplexity_by_hand(plain_base, tok, general, cfg.evaluate.max_length), "general_")
    assert len(tuned["samples"]) == 1

    report = run_compare([tmp_path / "base", run_dir], tmp_path / "cmp", ["base", "lora"])
    assert "| lora |" in (report.parent / "report.md").read_text()

    merged = AutoModelForCausalLM.from_pretrained(run_merge(run_dir)).eval()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-4)
