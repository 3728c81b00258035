"""compare, baseline, merge and the forgetting/sample parts of evaluate, on the tiny model.

One module fixture trains LoRA and full fine-tuning and evaluates base, both runs and the TF-IDF
baseline once; the tests then read those folders.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_reviews, write_csv
from domaintune import load_config, run_baseline, run_compare, run_evaluate, run_generate, run_merge, run_prepare
from domaintune.compare import LatencySettings
from domaintune.errors import DomaintuneError
from domaintune.runs import load_run_model
from domaintune.train import run_train

LATENCY = LatencySettings(prompts=2, max_new_tokens=4, warmup=1, repeats=2, max_length=64)


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    csv = write_csv(root / "reviews.csv", make_reviews(60))
    common = [
        f"model.name={tiny_model_dir}", f"data.source={csv}", f"data.output_dir={root / 'prepared'}",
        f"evaluate.base_output_dir={root / 'base'}", f"evaluate.baseline_output_dir={root / 'tfidf'}",
        "train.max_steps=2", "train.logging_steps=1", "train.batch_size=4", "train.max_length=64",
        "prompt.instruction=Classify.",
        "evaluate.max_length=64", "evaluate.max_examples=9", "evaluate.samples=2",
        "evaluate.sample_max_new_tokens=5", "threads=1",
    ]
    lora = load_config(None, common + [f"train.output_dir={root / 'lora'}", "train.learning_rate=0.05"])
    full = load_config(None, common + [f"train.output_dir={root / 'full'}", "train.method=full"])
    run_prepare(lora)
    run_evaluate(lora)
    for cfg in (lora, full):
        run_evaluate(cfg, str(run_train(cfg)))
    run_baseline(lora)
    return root, lora


def test_evaluate_keeps_greedy_samples_and_general_perplexity(evaluated):
    root, cfg = evaluated
    metrics = json.loads((root / "lora" / "metrics.json").read_text())
    assert len(metrics["samples"]) == 2 and metrics["general_perplexity"] > 1
    assert metrics["general_text"] == "domaintune:data/general_text.txt" and metrics["general_tokens_scored"] > 100
    first = metrics["samples"][0]
    test_rows = [json.loads(line) for line in (root / "prepared" / "test.jsonl").read_text().splitlines()]
    assert first["prompt"] == test_rows[0]["text"] and first["reference"] == test_rows[0]["label"]
    assert first["output"] == run_generate(cfg, first["prompt"], str(root / "lora"), max_new_tokens=5)


def test_general_text_from_the_user_and_its_errors(evaluated, tmp_path):
    root, cfg = evaluated
    own = tmp_path / "general.txt"
    own.write_text("one plain sentence about the weather\n\nanother about trains\n")
    short = cfg.model_copy(deep=True)
    short.evaluate.general_text = str(own)
    short.evaluate.base_output_dir = str(tmp_path / "b")
    tok = AutoTokenizer.from_pretrained(cfg.model.name)
    # Two passages (the blank line is skipped), each scored from its second token on.
    expected = sum(len(tok(p, add_special_tokens=False)["input_ids"]) - 1
                   for p in ("one plain sentence about the weather", "another about trains"))
    assert run_evaluate(short)["general_tokens_scored"] == expected
    short.evaluate.general_text = ""
    assert "general_perplexity" not in run_evaluate(short)
    short.evaluate.general_text = str(tmp_path / "missing.txt")
    with pytest.raises(DomaintuneError, match="evaluate.general_text: file not found"):
        run_evaluate(short)


def test_tfidf_baseline_separates_the_tiny_data(evaluated):
    root, _ = evaluated
    metrics = json.loads((root / "tfidf" / "metrics.json").read_text())
    card = json.loads((root / "tfidf" / "run_card.json").read_text())
    # Each label of the tiny data has its own three phrases, so a bag of words gets every row right.
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0
    assert card["method"] == "tfidf-logreg" and card["trainable_parameters"] == 3 * (card["vocabulary_size"] + 1)
    assert metrics["latency_p95_ms"] >= metrics["latency_p50_ms"] > 0


def test_compare_measures_every_model_and_writes_an_offline_report(evaluated):
    root, _ = evaluated
    folders = [root / n for n in ("base", "lora", "full", "tfidf")]
    report = run_compare(folders, root / "report", latency=LATENCY, threads=1)
    data = json.loads((root / "report" / "comparison.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["base", "lora", "lora-merged", "full", "tfidf"]
    for name in ("base", "lora", "lora-merged", "full"):
        row = rows[name]
        assert row["requests"] == 4 and row["max_new_tokens"] == 4
        assert row["latency_p95_ms"] >= row["latency_p50_ms"] > 0 and row["generated_tokens_per_second"] > 0
        assert row["peak_rss_generating_bytes"] >= row["rss_after_load_bytes"] > 0
        assert row["load_seconds"] > 0 and row["total_parameters"] > 0
    assert rows["lora"]["inference_parameters"] > rows["lora-merged"]["inference_parameters"]
    assert rows["lora-merged"]["inference_parameters"] == rows["base"]["inference_parameters"]
    assert rows["lora-merged"]["total_parameters"] == rows["base"]["total_parameters"]
    assert rows["lora-merged"]["accuracy"] == rows["lora"]["accuracy"] and rows["lora-merged"]["merge_seconds"] >= 0
    assert rows["full"]["trainable_parameters"] == rows["full"]["total_parameters"]
    assert rows["lora-merged"]["weights_bytes"] == rows["base"]["weights_bytes"] > rows["lora"]["weights_bytes"]
    assert "forgetting_pct" in rows["lora"] and rows["base"]["forgetting_pct"] == 0.0
    assert len(data["loss_curves"]["lora"]) == 2
    page = report.read_text()
    assert page.count("<svg") == 3 and "lora-merged" in page and "samples[].output" in page
    assert not re.search(r"""(src|href)=["']?https?:""", page) and "<script" not in page
    assert not (root / "report" / ".latency").exists(), "the timing processes' files are cleaned up"


def test_repeated_compare_gives_identical_quality(evaluated):
    root, _ = evaluated
    folders = [root / "base", root / "lora"]
    rows = []
    for out in ("r1", "r2"):
        run_compare(folders, root / out, latency=None)
        rows.append(json.loads((root / out / "comparison.json").read_text())["rows"])
    assert rows[0] == rows[1]


def test_merged_model_has_the_adapters_logits(evaluated, tmp_path):
    root, cfg = evaluated
    out = run_merge(root / "lora", tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapted, _ = load_run_model(str(root / "lora"), cfg)
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        expected, got = adapted.eval()(input_ids=ids).logits, merged(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name).eval()
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, got, atol=1e-3), "the merge must change the base"


def test_merge_refuses_a_full_run(evaluated):
    root, _ = evaluated
    with pytest.raises(DomaintuneError, match=r"full: merge needs a LoRA run"):
        run_merge(root / "full")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_compare_errors_name_the_folder_and_what_is_missing(evaluated, tmp_path):
    root, _ = evaluated
    no_card = _copy(root / "lora", tmp_path / "nocard")
    (no_card / "run_card.json").unlink()
    with pytest.raises(DomaintuneError, match=r"nocard: run_card.json is missing"):
        run_compare([root / "base", no_card], tmp_path / "o", latency=None)

    half = _copy(root / "lora", tmp_path / "half")
    shutil.rmtree(half / "adapter")
    with pytest.raises(DomaintuneError, match=r"half: adapter/adapter_config.json is missing"):
        run_compare([half], tmp_path / "o", latency=None)

    other = _copy(root / "full", tmp_path / "other")
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps(dict(metrics, base_model="another-model")))
    with pytest.raises(DomaintuneError, match=r"other: trained from base model 'another-model'"):
        run_compare([root / "base", other], tmp_path / "o", latency=None)

    with pytest.raises(DomaintuneError, match=r"nowhere: folder not found"):
        run_compare([tmp_path / "nowhere"], tmp_path / "o", latency=None)


def test_adapter_whose_base_is_gone_is_named(evaluated, tmp_path):
    root, _ = evaluated
    orphan = _copy(root / "lora", tmp_path / "orphan")
    config = yaml.safe_load((orphan / "config.yaml").read_text())
    config["model"]["name"] = str(tmp_path / "deleted-base")
    (orphan / "config.yaml").write_text(yaml.safe_dump(config))
    gone = r"orphan: the adapter's base model cannot be loaded: model '.*deleted-base"
    with pytest.raises(DomaintuneError, match=gone):
        run_merge(orphan)
    with pytest.raises(DomaintuneError, match=r"orphan: the adapter's base model cannot be loaded"):
        run_compare([orphan], tmp_path / "o", latency=LATENCY, threads=1)


def test_gguf_export_reads_back_in_transformers(evaluated):
    from domaintune import run_export

    root, cfg = evaluated
    out = run_export(root / "lora", "gguf", root / "gguf")
    card = json.loads((out / "export_card.json").read_text())
    f16, q8 = card["files"]["model-f16.gguf"], card["files"]["model-q8_0.gguf"]
    assert f16["max_abs_logit_diff"] < 1e-2 and f16["top1_agreement"] == 1.0
    assert 0 < f16["mean_abs_logit_diff"] <= f16["max_abs_logit_diff"]
    assert 0.8 <= q8["top1_agreement"] <= 1.0 and q8["bytes"] < f16["bytes"]
    # Independently of the card: the f16 file's logits equal the merged adapter model's.
    loaded = AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model-f16.gguf", dtype=torch.float32).eval()
    adapted, tok = load_run_model(str(root / "lora"), cfg)
    gguf_tok = AutoTokenizer.from_pretrained(str(out), gguf_file="model-f16.gguf")
    text = "pain is gone and I feel good &amp; review number 7"
    assert gguf_tok(text)["input_ids"] == tok(text)["input_ids"]
    assert gguf_tok.chat_template == tok.chat_template
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        diff = (loaded(input_ids=ids).logits - adapted.eval()(input_ids=ids).logits).abs().max()
    assert diff < 1e-2


def test_export_names_a_folder_that_is_no_run(tmp_path):
    from domaintune import run_export

    (tmp_path / "empty").mkdir()
    with pytest.raises(DomaintuneError, match=r"empty: not a complete run folder \(run_card.json is missing\)"):
        run_export(tmp_path / "empty")


def test_rss_sampler_sees_a_short_lived_allocation():
    import time

    import numpy as np

    from domaintune.runtime import PeakRss

    with PeakRss(interval=0.005) as sampler:
        before = sampler.peak
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched so that it is resident
        time.sleep(0.05)
        del block
    assert sampler.peak - before >= 60 * 2**20


@pytest.mark.parametrize("method, kind", [
    ("lora", "lora"), ("dora", "lora"), ("qlora", "lora"), ("dpo", "lora"),
    ("full", "full"), ("freeze", "full"), ("base", "base"),
])
def test_every_adapter_method_is_served_unmerged_and_merged(method, kind):
    from domaintune.compare import serving_kind

    assert serving_kind(method) == kind
