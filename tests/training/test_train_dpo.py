"""`train.method: dpo`: preference pairs -> a LoRA run folder that evaluate, compare and serve read."""

import functools
import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import kill_cli_after_checkpoint
from domaintune import load_config, run_compare, run_evaluate, run_prepare, run_train
from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import DedupConfig
from domaintune.data.feedback_leaks import drop_test_leaks
from domaintune.data.prepare import read_split
from domaintune.serving.feedback_export import run_feedback_export
from domaintune.serving.feedback_store import FeedbackStore
from domaintune.serving.pool import GenParams, ModelPool
from domaintune.training.checkpoints import complete_checkpoints, work_dir
from domaintune.training.dpo import conversational
from exactness import StepRecorder
from independent import (
    answer_predictions_by_hand,
    assert_same_classification,
    assert_same_perplexity,
    perplexity_by_hand,
)

PAIRS = [
    ("Classify the sentiment.\n\nthis drug worked great", "positive", "negative"),
    ("Classify the sentiment.\n\nterrible side effects", "negative", "positive"),
    ("Classify the sentiment.\n\nit was okay I guess", "neutral", "positive"),
    ("Classify the sentiment.\n\npain is gone and I feel good", "positive", "neutral"),
]


@pytest.fixture
def preference_file(tmp_path):
    """Votes stored as the review page stores them, then exported: the real path into DPO. Two reviewers
    cast each ballot, so the export holds each pair once."""
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    for i, (prompt, good, bad) in enumerate(PAIRS * 2):
        left, right = ("alpha", "base") if i % 2 else ("base", "alpha")
        answers = (good, bad) if i % 2 else (bad, good)
        reviewer = f"reviewer-{i // len(PAIRS)}"
        comparison = store.add_comparison(prompt, "val", str(i), left, right, *answers, {}, reviewer=reviewer)
        store.add_vote(comparison.id, "A" if i % 2 else "B", {}, None, reviewer=reviewer)
    run_feedback_export(store.path, tmp_path / "export")
    return tmp_path / "export" / "preference.jsonl"


def _append(path, rows):
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def _test_row_pairs(prepared, instruction):
    """Preference rows whose prompts are test rows: drawn from test, a test row pasted as typed (other
    case and spacing), and a test row with a word added (a near duplicate: Jaccard of word 3-grams >= 0.8)."""
    test = [r["text"] for r in read_split(prepared, "test") if len(r["text"].split()) >= 9]
    return [
        {"prompt": f"{instruction}\n\nwhatever", "chosen": "a", "rejected": "b", "source_split": "test"},
        {"prompt": "  " + test[0].upper(), "chosen": "a", "rejected": "b", "source_split": "typed"},
        {"prompt": f"{instruction}\n\n{test[1]} indeed", "chosen": "a", "rejected": "b"},
    ]


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
    # Batch 2: the 4 distinct pairs make 2 steps per epoch, each pair seen 3 times in 6 steps.
    cfg = load_config(None, tiny_overrides + [
        "train.method=dpo", f"train.dpo.data={preference_file}", f"train.output_dir={tmp_path / 'runs' / 'dpo'}",
        "train.max_steps=6", "train.batch_size=2", "train.learning_rate=0.02", "train.warmup_ratio=0",
    ])
    prepared = run_prepare(cfg)
    assert [json.loads(line)["reviewers"] for line in preference_file.read_text().splitlines()] == [
        ["reviewer-0", "reviewer-1"]] * len(PAIRS), "the export holds each ballot once"
    first = json.loads(preference_file.read_text().splitlines()[0])
    _append(preference_file, [first] + _test_row_pairs(prepared, cfg.prompt.instruction))
    run_dir = run_train(cfg)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".domaintune-output.json", "adapter", "config.yaml", "loss_curve.png", "metrics.jsonl", "run_card.json",
        "tensorboard"]
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["method"] == "dpo" and card["steps"] == 6 and card["preference_pairs"] == len(PAIRS)
    assert card["duplicate_pairs_dropped"] == 1
    assert card["test_leaks_dropped"] == {"test_split": 1, "exact": 1, "near": 1}
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
    metrics = run_evaluate(cfg, str(run_dir))
    rows = read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]
    texts, gold, labels = [r["text"] for r in rows], [r["label"] for r in rows], ["negative", "neutral", "positive"]
    assert_same_perplexity(metrics, perplexity_by_hand(tuned, tokenizer, texts, cfg.evaluate.max_length))
    predicted = answer_predictions_by_hand(tuned, tokenizer, cfg.prompt.instruction, texts, labels,
                                           cfg.evaluate.max_length)
    assert_same_classification(metrics, gold, predicted, labels)
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


def test_leak_check_drops_test_prompts_and_keeps_the_rest(tiny_overrides, tmp_path):
    cfg = load_config(None, tiny_overrides)
    prepared = run_prepare(cfg)
    leaks = _test_row_pairs(prepared, cfg.prompt.instruction)
    val = read_split(prepared, "val")[0]["text"]
    clean = [{"prompt": f"{cfg.prompt.instruction}\n\n{val}", "chosen": "a", "rejected": "b", "source_split": "val"},
             {"prompt": "Is ibuprofen safe with coffee?", "chosen": "a", "rejected": "b", "source_split": "typed"}]
    kept, dropped = drop_test_leaks(leaks + clean, prepared, cfg.prompt.instruction, DedupConfig())
    assert kept == clean and dropped == {"test_split": 1, "exact": 1, "near": 1}
    # Without near-dedup in the data config, prepare's check (and so this one) is exact only.
    kept, dropped = drop_test_leaks(leaks + clean, prepared, cfg.prompt.instruction, DedupConfig(near=False))
    assert kept == [leaks[2], *clean] and dropped == {"test_split": 1, "exact": 1, "near": 0}


def test_dpo_needs_the_test_split_to_check_for_leaks(tiny_overrides, preference_file, tmp_path):
    cfg = load_config(None, tiny_overrides + ["train.method=dpo", f"train.dpo.data={preference_file}",
                                              f"data.output_dir={tmp_path / 'nowhere'}"])
    with pytest.raises(DomaintuneError, match=r"test-leak check .*/test.jsonl not found: run `domaintune prepare`"):
        run_train(cfg)
    assert not (tmp_path / "runs" / "lora").exists()


def test_dpo_refuses_data_whose_every_prompt_is_a_test_row(tiny_overrides, tmp_path, capsys):
    cfg = load_config(None, tiny_overrides)
    prepared = run_prepare(cfg)
    data = tmp_path / "pref.jsonl"
    _append(data, _test_row_pairs(prepared, cfg.prompt.instruction))
    cfg = load_config(None, tiny_overrides + ["train.method=dpo", f"train.dpo.data={data}"])
    with pytest.raises(DomaintuneError, match=r"pref.jsonl: every preference pair's prompt is a test row"):
        run_train(cfg)
    assert "warning: train.dpo.data: dropped 3 preference pairs whose prompt is a test row" in capsys.readouterr().err


def test_prompts_are_cut_so_that_the_rendered_pair_fits_max_length(tiny_model_dir):
    # A long system prompt stands in for a template's own default one (SmolLM2's is 30 tokens): TRL drops
    # every pair whose rendered prompt reaches max_length, so the cut must measure the template.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    system = "Answer briefly. " * 2  # 49 template tokens with the tiny tokenizer, over the old fixed 32
    rows = [{"prompt": "Classify the sentiment.\n\n" + "this drug worked great for my pain " * 40,
             "chosen": "positive", "rejected": "negative"}]
    item = conversational(rows, tokenizer, system, max_length=128)[0]
    for answer in ("chosen", "rejected"):
        text = tokenizer.apply_chat_template(item["prompt"] + item[answer], tokenize=False)
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 128


def _dpo_overrides(tiny_overrides, preference_file, output_dir, *extra):
    return [*tiny_overrides, "train.method=dpo", f"train.dpo.data={preference_file}", f"train.output_dir={output_dir}",
            "train.batch_size=2", "train.warmup_ratio=0", *extra]


def test_dpo_sigkill_then_resume_matches_uninterrupted_run(tiny_overrides, preference_file, tmp_path):
    # Dropout on, so a resume that did not restore the RNG state would draw other masks and differ.
    args_of = functools.partial(_dpo_overrides, tiny_overrides, preference_file)
    common = ["train.max_steps=12", "train.save_steps=4", "train.lora.dropout=0.1", "train.logging_steps=2",
              "train.precision=fp32", "train.learning_rate=0.01"]
    run_prepare(load_config(None, tiny_overrides))
    reference = run_train(load_config(None, args_of(tmp_path / "straight", *common)))

    killed_dir = tmp_path / "killed"
    args = args_of(killed_dir, *common)
    checkpoints = kill_cli_after_checkpoint(args, killed_dir, step=4, seconds_per_step=0.2)

    last = int(complete_checkpoints(checkpoints)[-1].name.split("-")[1])
    counter = StepRecorder(tmp_path / "resumed-grads")
    resumed = run_train(load_config(None, args), resume=True, callbacks=[counter])
    assert json.loads((resumed / "run_card.json").read_text())["resumed_from_step"] == last >= 4
    # Training is deterministic, so equal weights alone cannot tell a resume from a silent restart.
    assert counter.steps_run == 12 - last, "the resumed process must run only the remaining steps"
    want = load_file(reference / "adapter" / "adapter_model.safetensors")
    got = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    # fp32 throughout; the resume restores the adapter, the optimizer state and the RNG exactly, and the
    # remaining steps run the same kernels on the same shapes: bitwise equal, no tolerance.
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_dpo_non_finite_loss_stops_with_step(tiny_overrides, preference_file, tmp_path):
    run_prepare(load_config(None, tiny_overrides))
    output_dir = tmp_path / "runs" / "dpo"
    cfg = load_config(None, _dpo_overrides(tiny_overrides, preference_file, output_dir, "train.learning_rate=1e12",
                                           "train.max_steps=12", "train.lora.dropout=0"))
    with pytest.raises(DomaintuneError, match=r"training loss became (nan|inf) at step \d+: lower train.learning_rate"):
        run_train(cfg)
    assert not output_dir.exists() and not work_dir(output_dir).exists(), "a diverged run leaves no folder"


def test_every_run_card_holds_every_key_compare_reads(tiny_overrides, preference_file, tmp_path):
    import domaintune.reporting.compare as compare_module
    from domaintune.core.run_card import RunCard, read_run_card

    # compare reads these from the typed card; a name RunCard lacks would read as None for every run
    assert set(compare_module.CARD_KEYS) <= set(RunCard.model_fields)
    run_prepare(load_config(None, tiny_overrides))
    runs = {
        "sft": run_train(load_config(None, [*tiny_overrides, f"train.output_dir={tmp_path / 'sft'}"])),
        "full": run_train(load_config(None, [*tiny_overrides, "train.method=full",
                                             f"train.output_dir={tmp_path / 'full'}"])),
        "dpo": run_train(load_config(None, _dpo_overrides(tiny_overrides, preference_file, tmp_path / "dpo"))),
    }
    for name, run_dir in runs.items():
        (run_dir / "metrics.json").write_text("{}")  # what evaluate writes is not under test here
        row = compare_module.read_folder(run_dir, name)
        card = read_run_card(run_dir)  # every field RunCard requires was written
        assert {k: row[k] for k in compare_module.CARD_KEYS} == {k: getattr(card, k) for k in compare_module.CARD_KEYS}
        assert card.train_tokens > 0 and card.train_tokens_per_second > 0, name
