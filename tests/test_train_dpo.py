"""`train.method: dpo`: preference pairs -> a LoRA run folder that evaluate, compare and serve read."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from domaintune import load_config, run_compare, run_evaluate, run_train
from domaintune.errors import DomaintuneError
from domaintune.feedback_export import run_feedback_export
from domaintune.feedback_store import FeedbackStore
from domaintune.serve_models import GenParams, ModelPool

PAIRS = [
    ("Classify the sentiment.\n\nthis drug worked great", "positive", "negative"),
    ("Classify the sentiment.\n\nterrible side effects", "negative", "positive"),
    ("Classify the sentiment.\n\nit was okay I guess", "neutral", "positive"),
    ("Classify the sentiment.\n\npain is gone and I feel good", "positive", "neutral"),
]


@pytest.fixture
def preference_file(tmp_path):
    """Votes stored as the review page stores them, then exported: the real path into DPO."""
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    for i, (prompt, good, bad) in enumerate(PAIRS * 2):
        left, right = ("alpha", "base") if i % 2 else ("base", "alpha")
        answers = (good, bad) if i % 2 else (bad, good)
        comparison = store.add_comparison(prompt, "test", str(i), left, right, *answers, {})
        store.add_vote(comparison.id, "A" if i % 2 else "B", {}, None)
    run_feedback_export(store.path, tmp_path / "export")
    return tmp_path / "export" / "preference.jsonl"


def _margin(model, tokenizer, prompt, chosen, rejected):
    """log p(chosen) - log p(rejected) for the answer tokens after the rendered prompt."""
    head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    scores = []
    for answer in (chosen, rejected):
        ids = tokenizer(head + answer + "<|im_end|>", add_special_tokens=False, return_tensors="pt")["input_ids"]
        start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logprobs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        targets = ids[0, 1:]
        scores.append(logprobs[start - 1:].gather(-1, targets[start - 1:, None]).sum().item())
    return scores[0] - scores[1]


def test_dpo_run_prefers_the_chosen_answers(tiny_overrides, preference_file, tiny_model_dir, tmp_path):
    cfg = load_config(None, tiny_overrides + [
        "train.method=dpo", f"train.dpo.data={preference_file}", f"train.output_dir={tmp_path / 'runs' / 'dpo'}",
        "train.max_steps=6", "train.learning_rate=0.02", "train.warmup_ratio=0",
    ])
    run_dir = run_train(cfg)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".domaintune-output.json", "adapter", "config.yaml", "metrics.jsonl", "run_card.json"]
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["method"] == "dpo" and card["steps"] == 6 and card["preference_pairs"] == 8
    assert 0 < card["trainable_parameters"] < card["total_parameters"]
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in r for r in log)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run_dir / "adapter").eval()
    before = sum(_margin(base, tokenizer, *pair) for pair in PAIRS)
    after = sum(_margin(tuned, tokenizer, *pair) for pair in PAIRS)
    assert after > before + 0.1, f"DPO must raise the chosen answers' margin ({before:.3f} -> {after:.3f})"

    # An ordinary run: evaluate, compare and serve take it like a LoRA run.
    from domaintune import run_prepare

    run_prepare(cfg)
    metrics = run_evaluate(cfg, str(run_dir))
    assert metrics["perplexity"] > 1 and 0 <= metrics["accuracy"] <= 1
    run_evaluate(cfg)
    report = run_compare([tmp_path / "runs" / "base", run_dir], tmp_path / "cmp", ["base", "dpo"])
    assert "| dpo |" in report.with_name("report.md").read_text()
    pool = ModelPool([str(run_dir)], include_base=True, cfg=cfg)
    served = pool.generate("dpo", pool.chat_ids("dpo", [{"role": "user", "content": PAIRS[0][0]}]),
                           GenParams(max_tokens=3, temperature=0))
    assert served.completion_tokens <= 3


def test_bad_preference_data_is_named(tiny_overrides, tmp_path):
    bad = tmp_path / "pref.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": ""}\n')
    cfg = load_config(None, tiny_overrides + ["train.method=dpo", f"train.dpo.data={bad}"])
    with pytest.raises(DomaintuneError, match=r"pref.jsonl:2: 'chosen' must be a non-empty string"):
        run_train(cfg)
    cfg = load_config(None, tiny_overrides + ["train.method=dpo", f"train.dpo.data={tmp_path / 'none.jsonl'}"])
    with pytest.raises(DomaintuneError, match="feedback export"):
        run_train(cfg)
