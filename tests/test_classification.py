"""Task `classification`: a sequence-classification head on a tiny BERT (encoder) and the tiny Llama (decoder)."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import build_tiny_bert, make_reviews
from domaintune import load_config, run_evaluate, run_prepare, run_train
from domaintune.runs import load_run_model


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    words = {w for r in make_reviews(60) for w in r["review"].lower().replace(",", " ").split()}
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), sorted(words))


def _classify_cfg(tiny_overrides, model_dir, tmp_path, *extra):
    cfg = load_config(None, [*tiny_overrides, f"model.name={model_dir}", "train.task=classification",
                             "train.max_steps=4", f"train.output_dir={tmp_path / 'cls'}", *extra])
    run_prepare(cfg)
    return cfg


def test_lora_on_bert_trains_head_and_loads_in_plain_peft(tiny_overrides, tiny_bert_dir, tmp_path):
    cfg = _classify_cfg(tiny_overrides, tiny_bert_dir, tmp_path)
    run_dir = run_train(cfg)
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["task"] == "classification" and card["labels"] == ["negative", "neutral", "positive"]

    metrics = run_evaluate(cfg, str(run_dir))
    assert 0 <= metrics["accuracy"] <= 1 and "perplexity" not in metrics
    assert sum(c["support"] for c in metrics["per_class"].values()) == metrics["test_rows"]

    ours, tok = load_run_model(str(run_dir), cfg)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    plain = PeftModel.from_pretrained(base, run_dir / "adapter")
    batch = tok(["this drug worked great", "awful side effects"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(ours.eval()(**batch).logits, plain.eval()(**batch).logits)


def test_full_classification_on_a_decoder(tiny_overrides, tiny_model_dir, tmp_path):
    cfg = _classify_cfg(tiny_overrides, tiny_model_dir, tmp_path, "train.method=full")
    run_dir = run_train(cfg)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    batch = tok(["this drug worked great"], return_tensors="pt")
    assert model(**batch).logits.shape == (1, 3)
    assert "accuracy" in run_evaluate(cfg, str(run_dir))


def test_classification_needs_labels(tiny_overrides, tmp_path):
    from domaintune.errors import DomaintuneError

    path = tmp_path / "docs.csv"
    path.write_text("body\n" + "\n".join(f"document number {i}" for i in range(20)) + "\n")
    cfg = load_config(None, [*tiny_overrides, f"data.source={path}", "data.format=text", "data.text_column=body",
                             "train.task=classification"])
    run_prepare(cfg)
    with pytest.raises(DomaintuneError, match="classification needs labelled data"):
        run_train(cfg)
