"""The feedback loop end to end on the real embedded SmolLM2-135M-Instruct, a handful of steps:
serve a LoRA run and the base -> blind comparisons and votes -> export -> DPO run -> evaluate, compare, serve.
Training runs at `train.precision: auto` (bf16 or fp32 by CPU); nothing here compares numbers across runs.
"""

import json

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import local_client
from domaintune import load_config, run_compare, run_evaluate, run_feedback_export, run_prepare, run_train
from domaintune.data.prepare import read_split
from domaintune.modeling.models import resolve_model
from domaintune.serving.app import ServeSettings, create_app
from domaintune.serving.pool import ModelPool
from domaintune.serving.review import ReviewSampling
from independent import assert_same_perplexity, perplexity_by_hand

pytestmark = pytest.mark.e2e


def test_real_model_serve_vote_export_dpo(tmp_path):
    common = [
        f"data.output_dir={tmp_path / 'prepared'}", f"evaluate.base_output_dir={tmp_path / 'base'}",
        "data.val_fraction=0",  # no validation pass after training: it would cost minutes here
        "data.review_fraction=0.05",  # the review page's prompts, held out from test
        "train.batch_size=2", "train.max_length=128", "train.max_train_rows=4", "train.max_steps=1",
        "evaluate.max_examples=2", "evaluate.max_length=96", "evaluate.batch_size=2",
    ]
    cfg = load_config(None, common + [f"train.output_dir={tmp_path / 'runs' / 'lora'}"])
    prepared = run_prepare(cfg)
    lora = run_train(cfg)
    review_ids = {r["id"] for r in read_split(prepared, "review")}

    pool = ModelPool([str(lora)], include_base=True, cfg=cfg)
    client = local_client(create_app(pool, ServeSettings(db_path=tmp_path / "runs" / "feedback.sqlite", seed=1,
                                                       review_sampling=ReviewSampling(max_tokens=6))))
    client.get("/review")  # the reviewer cookie, as a browser gets it
    chat = client.post("/v1/chat/completions", json={
        "model": "lora", "messages": [{"role": "user", "content": "Is ibuprofen an anti-inflammatory drug?"}],
        "max_tokens": 12, "temperature": 0}).json()
    assert chat["choices"][0]["message"]["content"].strip() and chat["usage"]["completion_tokens"] <= 12

    for i in range(3):
        view = client.post("/review/api/comparisons", json={}).json()
        assert view["source"] == "review" and "models" not in view
        assert client.app.state.store.get_comparison(view["id"]).source_id in review_ids
        if view["answers"]["A"] != view["answers"]["B"]:
            vote = {"comparison_id": view["id"], "choice": "AB"[i % 2], "ratings": {"A": {"quality": 4}}}
            assert client.post("/review/api/votes", json=vote).status_code == 200
    card = run_feedback_export(tmp_path / "runs" / "feedback.sqlite", tmp_path / "feedback")
    assert card["preference_pairs"] >= 1 and card["votes_by_source_split"] == {"review": card["votes"]}

    dpo_cfg = load_config(None, common + [
        "train.method=dpo", f"train.dpo.data={tmp_path / 'feedback' / 'preference.jsonl'}",
        f"train.output_dir={tmp_path / 'runs' / 'dpo'}"])
    dpo = run_train(dpo_cfg)
    dpo_card = json.loads((dpo / "run_card.json").read_text())
    assert dpo_card["method"] == "dpo" and dpo_card["test_leaks_dropped"] == {"test_split": 0, "exact": 0, "near": 0}
    tuned = run_evaluate(dpo_cfg, str(dpo))
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve_model(cfg.model.name)),
                                      dpo / "adapter").eval()
    texts = [r["text"] for r in read_split(cfg.data.output_dir, "test")[: dpo_cfg.evaluate.max_examples]]
    tok = AutoTokenizer.from_pretrained(dpo / "adapter")
    assert_same_perplexity(tuned, perplexity_by_hand(plain, tok, texts, dpo_cfg.evaluate.max_length))
    report = run_compare([dpo], tmp_path / "cmp", ["dpo"]).with_name("report.md").read_text()
    assert "| dpo |" in report
    both = ModelPool([str(lora), str(dpo)], include_base=False, cfg=cfg)
    assert sorted(both.models) == ["dpo", "lora"] and both.get("dpo").model is both.get("lora").model
