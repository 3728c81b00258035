"""Task `classification`: a sequence-classification head on a tiny BERT (encoder) and the tiny Llama (decoder)."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import build_tiny_bert, make_reviews
from domaintune import load_config, run_evaluate, run_prepare, run_train
from domaintune.data.prepare import read_split
from domaintune.modeling.runs import load_run_model
from in_memory import LogitsAtTrainEnd
from independent import assert_same_classification, head_predictions_by_hand


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
    # fp32: a bf16 run's trained model keeps accelerate's autocast forward (see test_pipeline).
    cfg = _classify_cfg(tiny_overrides, tiny_bert_dir, tmp_path, "train.precision=fp32")
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    batch = dict(tok(["this drug worked great", "awful side effects"], padding=True, return_tensors="pt"))
    trained = LogitsAtTrainEnd(batch)
    run_dir = run_train(cfg, callbacks=[trained])
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["task"] == "classification" and card["labels"] == ["negative", "neutral", "positive"]

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    plain = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    ours, _ = load_run_model(str(run_dir), cfg)
    with torch.no_grad():
        # float32 weights saved and loaded bit for bit, the same forward pass: the same bits.
        assert torch.equal(plain(**batch).logits, trained.logits)
        assert torch.equal(ours.eval()(**batch).logits, trained.logits)

    metrics = run_evaluate(cfg, str(run_dir))
    assert "perplexity" not in metrics
    rows = read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]
    gold, labels = [r["label"] for r in rows], card["labels"]
    predicted = head_predictions_by_hand(plain, tok, [r["text"] for r in rows], labels, cfg.evaluate.max_length)
    assert_same_classification(metrics, gold, predicted, labels)


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
    from domaintune.core.errors import DomaintuneError

    path = tmp_path / "docs.csv"
    path.write_text("body\n" + "\n".join(f"document number {i}" for i in range(20)) + "\n")
    cfg = load_config(None, [*tiny_overrides, f"data.source={path}", "data.format=text", "data.text_column=body",
                             "train.task=classification"])
    run_prepare(cfg)
    with pytest.raises(DomaintuneError, match="classification needs labelled data"):
        run_train(cfg)


@pytest.mark.parametrize("base", ["tiny_model_dir", "tiny_bert_dir"])
def test_compare_times_a_classifier_by_its_forward_pass(base, request, tiny_overrides, tmp_path):
    from domaintune import run_baseline, run_compare, run_merge
    from domaintune.modeling.seqcls import load_classifier
    from domaintune.reporting.compare import LatencySettings
    from domaintune.reporting.tables import text_table

    model_dir = request.getfixturevalue(base)
    cfg = _classify_cfg(tiny_overrides, model_dir, tmp_path, f"evaluate.baseline_output_dir={tmp_path / 'tfidf'}")
    full_cfg = load_config(None, [*tiny_overrides, f"model.name={model_dir}", "train.task=classification",
                                  "train.max_steps=2", "train.method=full", f"train.output_dir={tmp_path / 'full'}"])
    folders = []
    for run_cfg in (cfg, full_cfg):
        folders.append(run_train(run_cfg))
        run_evaluate(run_cfg, str(folders[-1]))
    run_baseline(cfg)
    settings = LatencySettings(prompts=2, max_new_tokens=4, warmup=1, repeats=2, max_length=16)
    report = run_compare([*folders, tmp_path / "tfidf"], tmp_path / "cmp", ["lora", "full", "tfidf"], settings,
                         threads=1)
    rows = {r["name"]: r for r in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["rows"]}
    for name in ("lora", "lora-merged", "full"):
        row = rows[name]
        assert row["latency_kind"] == "classify" and row["requests"] == 4 and row["requests_per_second"] > 0
        assert row["latency_p95_ms"] >= row["latency_p50_ms"] > 0 and 0 < row["input_tokens_max"] <= 16
        assert row["peak_rss_classifying_bytes"] >= row["rss_after_load_bytes"] > 0
        assert "generated_tokens_per_second" not in row and "peak_rss_generating_bytes" not in row
    assert rows["tfidf"]["latency_kind"] == "tfidf-predict" and rows["tfidf"]["requests_per_second"] > 0
    # Merged, the LoRA classifier is the same architecture as the full one: backbone plus head.
    assert rows["lora-merged"]["inference_parameters"] == rows["full"]["inference_parameters"]
    assert rows["lora"]["inference_parameters"] > rows["full"]["inference_parameters"]

    merged = run_merge(folders[0], tmp_path / "merged")
    # compare counts the merged classifier's tensors (head included) without merging: exactly the data
    # part of the files `domaintune merge` writes, which beside it hold only a small JSON header.
    assert rows["lora-merged"]["weights_bytes"] == sum(_tensor_bytes(f) for f in merged.glob("*.safetensors"))
    assert 0 < rows["full"]["weights_bytes"] - rows["lora-merged"]["weights_bytes"] < 64 * 1024
    adapted, tok = load_run_model(str(folders[0]), cfg)
    plain = load_classifier(str(merged), ["negative", "neutral", "positive"]).eval()
    batch = tok(["this drug worked great"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(adapted.eval()(**batch).logits, plain(**batch).logits, atol=1e-5)

    table = text_table(list(rows.values()))
    assert "latency kind" in table and "classify: one forward pass" in table and "tfidf-predict: TF-IDF" in table
    page = report.read_text()
    assert "no token is generated" in page and "(classify)" in page


def _tensor_bytes(path) -> int:
    """A safetensors file's size less its 8-byte length prefix and JSON header."""
    with open(path, "rb") as handle:
        header = int.from_bytes(handle.read(8), "little")
    return path.stat().st_size - 8 - header


def test_latency_is_compared_with_the_base_only_for_the_same_work():
    from domaintune.reporting.compare import add_relative_figures

    rows = [{"variant": "base", "latency_kind": "generate", "latency_p50_ms": 100.0},
            {"variant": "lora", "latency_kind": "generate", "latency_p50_ms": 120.0},
            {"variant": "full", "latency_kind": "classify", "latency_p50_ms": 10.0}]
    add_relative_figures(rows)
    assert rows[1]["latency_vs_base"] == 1.2 and "latency_vs_base" not in rows[2]
