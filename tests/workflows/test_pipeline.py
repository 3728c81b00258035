"""prepare -> train -> evaluate -> compare on the tiny model, for LoRA and full fine-tuning."""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

from domaintune import load_config, run_compare, run_evaluate, run_generate, run_prepare, run_train
from domaintune.core.errors import DomaintuneError
from domaintune.data.prepare import read_split
from domaintune.modeling.runs import load_run_model
from in_memory import LogitsAtTrainEnd
from independent import (
    answer_predictions_by_hand,
    assert_same_classification,
    assert_same_perplexity,
    perplexity_by_hand,
)


@pytest.fixture
def lora_run(tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    run_prepare(cfg)
    return cfg, run_train(cfg)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_run_folder_and_card(lora_run):
    cfg, run_dir = lora_run
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".domaintune-output.json", "adapter", "config.yaml", "loss_curve.png", "metrics.jsonl", "run_card.json",
        "tensorboard"
    ]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents*"))
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["method"] == "lora" and card["steps"] == 3
    assert 0 < card["trainable_parameters"] < card["total_parameters"]
    assert card["train_tokens"] > 0 and card["weights_bytes"] > 0 and card["peak_rss_bytes"] > 0
    data_card = json.loads((Path(cfg.data.output_dir) / "data_card.json").read_text())
    assert card["data_fingerprint"] == data_card["fingerprint"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log)


def test_saved_adapter_in_plain_peft_is_the_model_that_trained(tiny_overrides, tiny_model_dir):
    # fp32 training: with bf16 (auto on a CPU with AMX) accelerate leaves the trained model's forward
    # wrapped in autocast, and its logits would be bf16 ones, not those of the float32 weights saved.
    cfg = load_config(None, tiny_overrides + ["train.precision=fp32"])
    run_prepare(cfg)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    trained = LogitsAtTrainEnd({"input_ids": ids})
    run_dir = run_train(cfg, callbacks=[trained])
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run_dir / "adapter")
    # Training and loading are both float32 on the CPU, and safetensors stores the float32 adapter weights
    # bit for bit, so the same unmerged forward pass over the same weights gives the same bits: no tolerance.
    assert torch.equal(_logits(plain.eval(), ids), trained.logits)
    ours, _ = load_run_model(str(run_dir), cfg)
    assert torch.equal(_logits(ours.eval(), ids), trained.logits), "domaintune's loader gives the same model"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert not torch.allclose(_logits(base, ids), trained.logits), "the adapter must change the model"


def test_evaluate_and_compare(lora_run, tmp_path, tiny_model_dir):
    cfg, run_dir = lora_run
    base = run_evaluate(cfg)
    tuned = run_evaluate(cfg, str(run_dir))
    rows = read_split(cfg.data.output_dir, "test")[:12]
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    labels = ["negative", "neutral", "positive"]
    plain_base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    plain_tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                            run_dir / "adapter").eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for metrics, model in ((base, plain_base), (tuned, plain_tuned)):
        assert metrics["test_rows"] == 12
        assert_same_perplexity(metrics, perplexity_by_hand(model, tok, texts, cfg.evaluate.max_length))
        predicted = answer_predictions_by_hand(model, tok, cfg.prompt.instruction, texts, labels,
                                               cfg.evaluate.max_length)
        assert_same_classification(metrics, gold, predicted, labels)
    assert (run_dir / "metrics.json").is_file() and (tmp_path / "runs" / "base" / "config.yaml").is_file()
    report = run_compare([tmp_path / "runs" / "base", run_dir], tmp_path / "cmp", ["base", "lora"])
    text = (report.parent / "report.md").read_text()
    assert "| base |" in text and "| lora |" in text and "| lora-merged |" in text and "test ppl" in text


def test_full_fine_tuning_is_one_key_away(tiny_overrides, tmp_path):
    cfg = load_config(None, tiny_overrides + ["train.method=full", f"train.output_dir={tmp_path / 'full'}"])
    run_prepare(cfg)
    run_dir = run_train(cfg)
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["method"] == "full" and card["trainable_parameters"] == card["total_parameters"]
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    ours, _ = load_run_model(str(run_dir), cfg)
    ids = torch.randint(0, 300, (1, 10))
    assert torch.equal(_logits(model, ids), _logits(ours.eval(), ids))


def test_causal_lm_task_on_text_data(tiny_overrides, tmp_path):
    cfg = load_config(None, tiny_overrides + ["train.task=causal-lm", f"train.output_dir={tmp_path / 'clm'}"])
    run_prepare(cfg)
    card = json.loads((run_train(cfg) / "run_card.json").read_text())
    assert card["task"] == "causal-lm" and card["steps"] == 3


def test_failed_training_leaves_no_run_folder(tiny_overrides, tmp_path, monkeypatch):
    cfg = load_config(None, tiny_overrides)
    run_prepare(cfg)

    def boom(self, *args, **kwargs):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(Trainer, "train", boom)
    with pytest.raises(RuntimeError):
        run_train(cfg)
    runs = tmp_path / "runs"
    assert not (runs / "lora").exists()
    assert list(runs.glob(".*")) == [], "no staging folder may be left behind"


def test_train_without_prepare_says_what_to_do(tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    with pytest.raises(DomaintuneError, match="run `domaintune prepare` first"):
        run_train(cfg)


def test_incomplete_run_folder_is_named(tiny_overrides, tmp_path):
    cfg = load_config(None, tiny_overrides)
    (tmp_path / "half").mkdir()
    with pytest.raises(DomaintuneError, match=r"half: not a complete run folder \(run_card.json is missing\)"):
        run_evaluate(cfg, str(tmp_path / "half"))


def test_generate_from_a_run(lora_run):
    cfg, run_dir = lora_run
    out = run_generate(cfg, "this drug worked great", str(run_dir), max_new_tokens=4)
    assert isinstance(out, str)


def test_demo_flow_on_the_tiny_model(tiny_overrides, tmp_path):
    from domaintune import demo_config, run_demo

    lines = []
    report = run_demo(demo_config(tiny_overrides), log=lines.append)
    assert report == tmp_path / "runs" / "compare" / "report.html", "beside the run: compare never writes into one"
    table = "\n".join(lines)
    assert "test ppl" in table and "accuracy" in table and "COST: training" in table and "trainable params" in table
    quality = table.split("QUALITY\n")[1].split("\n* differs")[0].splitlines()[2:]
    assert [line[:24].strip() for line in quality] == ["base", "lora", "lora-merged", "tfidf",
                                                       "majority (reference)", "label prior (reference)"]
    assert "label prior (reference)" in quality[-1] and "(expected)" in quality[-1]
    assert [line.split(":")[0] for line in table.split("per-class F1:\n")[1].splitlines()[:2]] == ["  base", "  lora"]
    # Every evaluated folder keeps its predictions, so base and lora carry intervals and no evaluate-again note.
    # The baseline is fitted in every demo, so the adapted model is always seen beside it.
    paired = table.split("PAIRED DIFFERENCES")[1].split("per-class F1:")[0].splitlines()
    assert any(line.split()[:2] == ["lora", "tfidf"] for line in paired if line.strip())
    cfg = demo_config(tiny_overrides)
    folders = {"base": cfg.evaluate.base_output_dir, "lora": cfg.train.output_dir,
               "tfidf": cfg.evaluate.baseline_output_dir}
    for line, folder in zip([quality[0], quality[1], quality[3]], folders, strict=True):
        assert (Path(folders[folder]) / "predictions.jsonl").is_file()
        assert "[" in line and f"note: {folder}: no predictions.jsonl" not in table


def _instruction_jsonl(tmp_path):
    path = tmp_path / "inst.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"How is drug {i} taken?", "output": f"Twice a day, {i} mg."})
                            + "\n" for i in range(24)))
    return path


def test_instruction_data_trains_as_causal_lm(tiny_overrides, tmp_path):
    """The train stage reads the `text` of instruction/chat rows; `messages` are extra keys it ignores."""
    path = _instruction_jsonl(tmp_path)
    cfg = load_config(None, tiny_overrides + [f"data.source={path}", "data.format=instruction", "train.task=causal-lm",
                                              f"train.output_dir={tmp_path / 'inst'}"])
    run_prepare(cfg)
    card = json.loads((run_train(cfg) / "run_card.json").read_text())
    assert card["task"] == "causal-lm" and card["steps"] == 3


def test_instruction_data_trains_as_sft_on_the_answers(tiny_overrides, tmp_path):
    from transformers import AutoTokenizer

    from domaintune.data.prepare import read_split
    from domaintune.modeling.render import IGNORE_INDEX
    from domaintune.training.train import encode_rows

    path = _instruction_jsonl(tmp_path)
    cfg = load_config(None, tiny_overrides + [f"data.source={path}", "data.format=instruction", "train.task=sft",
                                              f"train.output_dir={tmp_path / 'inst'}"])
    run_prepare(cfg)
    tok = AutoTokenizer.from_pretrained(cfg.model.name)
    row = encode_rows(read_split(cfg.data.output_dir, "train")[:1], tok, cfg)[0]
    learned = tok.decode([t for t in row["labels"] if t != IGNORE_INDEX])
    assert "Twice a day" in learned and "How is drug" not in learned
    card = json.loads((run_train(cfg) / "run_card.json").read_text())
    assert card["task"] == "sft" and card["steps"] == 3


def test_demo_compare_writes_the_report_for_base_lora_full_and_tfidf(tiny_overrides, tmp_path):
    from domaintune import demo_config, run_demo
    from domaintune.reporting.compare import LatencySettings

    cfg = demo_config(tiny_overrides + [f"evaluate.baseline_output_dir={tmp_path / 'runs' / 'tfidf'}", "threads=1",
                                        "evaluate.samples=1"])
    lines = []
    report = run_demo(cfg, log=lines.append, compare=True,
                      latency=LatencySettings(prompts=1, max_new_tokens=2, warmup=0, max_length=96))
    assert report == tmp_path / "runs" / "compare" / "report.html"
    rows = json.loads((report.parent / "comparison.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["base", "lora", "lora-merged", "full", "tfidf"]
    full = json.loads((tmp_path / "runs" / "full" / "run_card.json").read_text())
    assert full["method"] == "full" and full["train_rows"] == json.loads(
        (tmp_path / "runs" / "lora" / "run_card.json").read_text())["train_rows"]
    assert all(r["latency_p50_ms"] > 0 for r in rows)
    assert "[7/7]" in "\n".join(lines)
