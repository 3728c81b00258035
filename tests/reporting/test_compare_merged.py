"""compare's merged-LoRA row: its quality comes from evaluating the merged folder, not from the LoRA row."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import domaintune.export.merge
from domaintune import load_config, run_compare, run_evaluate, run_prepare, run_train
from domaintune.core.errors import DomaintuneError
from domaintune.data.prepare import read_split
from independent import assert_same_perplexity, perplexity_by_hand


@pytest.fixture
def evaluated_lora(tiny_overrides):
    cfg = load_config(None, tiny_overrides + ["train.learning_rate=0.05"])
    run_prepare(cfg)
    run_dir = run_train(cfg)
    # Evaluated with other settings than the run's config.yaml holds: the merged row must follow these.
    evaluated = cfg.model_copy(deep=True)
    evaluated.evaluate.max_examples, evaluated.evaluate.samples = 5, 0
    run_evaluate(evaluated, str(run_dir))
    return evaluated, run_dir


def _rows(out):
    return {r["name"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}


def _perplexity_of(folder, cfg):
    texts = [r["text"] for r in read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return perplexity_by_hand(model, AutoTokenizer.from_pretrained(folder), texts, cfg.evaluate.max_length)


def test_merged_row_is_the_merged_folder_evaluated(evaluated_lora, tmp_path, monkeypatch):
    cfg, run_dir = evaluated_lora
    real_merge = domaintune.export.merge.run_merge
    seen = tmp_path / "seen"

    def merge_and_keep(run, out, *args, **kwargs):
        folder = real_merge(run, out, *args, **kwargs)
        shutil.copytree(folder, seen)
        return folder

    monkeypatch.setattr(domaintune.export.merge, "run_merge", merge_and_keep)
    rows = _rows(run_compare([run_dir], tmp_path / "cmp", ["lora"], latency=None).parent)
    merged = rows["lora-merged"]
    assert merged["test_rows"] == 5 and merged["samples"] == [], "evaluated as the run was (max_examples, samples)"
    assert_same_perplexity(merged, _perplexity_of(seen, cfg), counted=False)
    assert not (tmp_path / "cmp" / ".merged").exists(), "the merged folders are not left in the report"

    # A merge that changed the model must show in the merged row, and in it alone.
    def broken_merge(run, out, *args, **kwargs):
        folder = real_merge(run, out, *args, **kwargs)
        weights = load_file(folder / "model.safetensors")
        weights["model.norm.weight"] = weights["model.norm.weight"] * 3
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        shutil.copytree(folder, tmp_path / "broken")
        return folder

    monkeypatch.setattr(domaintune.export.merge, "run_merge", broken_merge)
    rows = _rows(run_compare([run_dir], tmp_path / "cmp", ["lora"], latency=None).parent)
    assert rows["lora"]["perplexity"] == json.loads((run_dir / "metrics.json").read_text())["perplexity"]
    assert abs(rows["lora-merged"]["test_loss"] - rows["lora"]["test_loss"]) > 1e-3
    assert_same_perplexity(rows["lora-merged"], _perplexity_of(tmp_path / "broken", cfg), counted=False)


def test_metrics_without_evaluation_settings_are_refused(evaluated_lora, tmp_path):
    _, run_dir = evaluated_lora
    metrics = json.loads((run_dir / "metrics.json").read_text())
    del metrics["evaluate_settings"]
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(DomaintuneError, match=r"does not record how the run was evaluated .* evaluate") as raised:
        run_compare([run_dir], tmp_path / "cmp", latency=None)
    assert "\n" not in str(raised.value)
