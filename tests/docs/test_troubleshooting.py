"""docs/troubleshooting.md and the causes domaintune detects itself: each detection on the tiny model or
small files, each with the case where it must stay quiet."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from cards import fake_data_card, write_fake_run
from cli_errors import one_error_line
from conftest import build_tiny_bert, make_reviews, write_csv
from domaintune import load_config, run_prepare, run_train
from domaintune.core.data_card import read_data_card
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import read_json

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "troubleshooting.md"
POINTER = re.compile(r"docs/troubleshooting\.md#([a-z0-9-]+)")
KOREAN = ["정말 만족합니다. 배송이 하루 만에 왔어요.", "너무 실망했어요. 한 달 만에 고장났어요.",
          "그냥 그래요. 가격 생각하면 무난해요.", "디자인이 예뻐서 자꾸 보게 돼요. 재구매 의사 있습니다.",
          "냄새가 심해서 못 쓰겠어요. 환불 요청했습니다.", "보통입니다. 장단점이 있어요."]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_pointer_in_the_code_names_a_section_of_the_guide():
    anchors = {github_slug(line[3:]) for line in GUIDE.read_text(encoding="utf-8").splitlines()
               if line.startswith("## ")}
    pointed = {m for path in (ROOT / "src").rglob("*.py") for m in POINTER.findall(path.read_text(encoding="utf-8"))}
    assert len(pointed) >= 15  # the grep itself works: messages across the code point to the guide
    assert pointed <= anchors, f"pointers without a section: {sorted(pointed - anchors)}"


# Loss that does not fall -------------------------------------------------------------------------

def test_loss_stalled_rule():
    from domaintune.training.monitor import loss_stalled

    def history(losses):
        return [{"step": i + 1, "loss": x} for i, x in enumerate(losses)] + [{"train_loss": 1.0}]

    assert loss_stalled(history([2.0, 1.8, 1.5, 1.3, 1.1, 1.0])) is None
    assert "did not fall: 2 over steps 1-2, 2.01 over steps 5-6" in loss_stalled(
        history([2.0, 2.0, 2.05, 1.97, 2.0, 2.02]))
    assert loss_stalled(history([2.0, 2.0, 2.0])) is None  # too few logged steps to tell
    assert loss_stalled(history([2.0, float("nan"), 2.0, 2.0, 2.0])) is not None  # a NaN is skipped


def test_a_run_whose_loss_did_not_fall_says_so_and_its_card_keeps_it(tiny_overrides, tmp_path, capsys):
    base = [*tiny_overrides, "train.max_steps=8", "train.sampling=sequential", "train.warmup_ratio=0"]
    run_prepare(load_config(None, base))
    stalled = run_train(load_config(None, [*base, "train.learning_rate=1e-9"]))
    assert "training loss did not fall" in capsys.readouterr().err
    assert read_json(stalled / "run_card.json")["warnings"][0].endswith("#loss-does-not-fall")

    learnt = run_train(load_config(None, [*base, "train.method=full", "train.learning_rate=0.01",
                                          f"train.output_dir={tmp_path / 'ok'}"]))
    assert read_json(learnt / "run_card.json")["warnings"] == []
    assert "did not fall" not in capsys.readouterr().err


# Tokenizer without a pad token --------------------------------------------------------------------

def test_tokenizer_without_pad_token_pads_with_eos_and_says_so_once(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from domaintune.modeling.models import load_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "nopad")
    first, second = load_tokenizer(str(tmp_path / "nopad")), load_tokenizer(str(tmp_path / "nopad"))
    assert first.pad_token == second.pad_token == "<|im_end|>"
    assert capsys.readouterr().err.count("has no pad token; padding with its end-of-sequence token") == 1

    load_tokenizer(str(tiny_model_dir))  # has its own pad token: nothing to say
    assert capsys.readouterr().err == ""

    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path / "neither")
    with pytest.raises(DomaintuneError, match="neither a pad nor an end-of-sequence token"):
        load_tokenizer(str(tmp_path / "neither"))


# Slow CPU training: forced bf16 without native kernels ----------------------------------------------

def test_forced_bf16_on_a_cpu_that_emulates_it_is_warned(monkeypatch, capsys):
    from domaintune.core import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert runtime.resolve_precision("bf16") == "bf16"
    assert "bf16 matmuls are emulated" in capsys.readouterr().err
    assert runtime.resolve_precision("auto") == "fp32"
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert runtime.resolve_precision("bf16") == "bf16"
    assert capsys.readouterr().err == ""


# Garbled Korean (mojibake) --------------------------------------------------------------------------

def test_looks_garbled():
    from domaintune.data.clean import looks_garbled

    korean = "이 제품 정말 좋아요. 배송도 빨라요!"
    assert looks_garbled(korean.encode("cp949").decode("latin-1"))  # ÀÌ Á¦Ç° ...
    assert looks_garbled(korean.encode("utf-8").decode("cp1252", errors="replace"))
    for fine in (korean, "좋아요 ㅋㅋㅋ ㅠㅠ ^^ ♥", "Très bien, déjà vu — naïve café", "plain ASCII"):
        assert not looks_garbled(fine), fine


def test_mojibake_is_counted_in_the_card_and_warned(tmp_path):
    from domaintune.data.card import summarize

    rows = [{"review": f"{KOREAN[i % 6]} {i}번째 후기", "rating": ("positive", "negative", "neutral")[i % 3]}
            for i in range(30)]
    path = write_csv(tmp_path / "ko.csv", rows)
    path.write_bytes(path.read_text(encoding="utf-8").encode("cp949"))  # a Korean Excel export
    common = [f"data.source={path}", "model.name=/nonexistent-model", "data.dedup.near=false"]

    right = run_prepare(load_config(None, [*common, f"data.output_dir={tmp_path / 'auto'}"]))
    assert read_data_card(right).garbled_rows.rows == 0
    assert "garbled" not in summarize(read_data_card(right))

    wrong = run_prepare(load_config(None, [*common, "data.encoding=latin-1", f"data.output_dir={tmp_path / 'l1'}"]))
    card = read_data_card(wrong)
    assert card.garbled_rows.rows == 30
    assert "warning: 30 rows look garbled" in summarize(card)
    assert "#garbled-korean-text" in (wrong / "data_card.md").read_text(encoding="utf-8")

    # The script filter drops every garbled row: the error says why.
    with pytest.raises(DomaintuneError, match="no rows left .* 30 rows look garbled"):
        run_prepare(load_config(None, [*common, "data.encoding=latin-1", "data.filters.script=hangul",
                                       f"data.output_dir={tmp_path / 'none'}"]))


# Leaked test set and evaluating on other data -------------------------------------------------------

def test_leaks_kept_on_request_are_warned(tmp_path, capsys):
    from domaintune.data.card import summarize
    from domaintune.evaluation.evaluate import check_data

    rows = make_reviews(60)
    train, test = write_csv(tmp_path / "train.csv", rows), write_csv(tmp_path / "test.csv", rows[:10])
    common = [f"data.source={train}", f"data.test_source={test}", "model.name=/nonexistent-model"]
    kept = run_prepare(load_config(None, [*common, "data.remove_leaks=false", f"data.output_dir={tmp_path / 'k'}"]))
    card = read_data_card(kept)
    assert "were kept (data.remove_leaks=false)" in summarize(card)
    check_data("base", card, str(kept))
    assert "#leaked-test-set" in capsys.readouterr().err

    removed = run_prepare(load_config(None, [*common, f"data.output_dir={tmp_path / 'r'}"]))
    assert "warning" not in summarize(read_data_card(removed))
    check_data("base", read_data_card(removed), str(removed))
    assert capsys.readouterr().err == ""


def _fake_run(folder: Path, **card) -> str:
    return str(write_fake_run(folder, **card))


def test_a_run_evaluated_on_other_prepared_data(tmp_path, capsys):
    from domaintune.evaluation.evaluate import check_data

    data = fake_data_card(fingerprint="bbbb", labels=["negative", "positive"])
    same = _fake_run(tmp_path / "same", task="sft", data_fingerprint="bbbb", labels=data.labels)
    check_data(same, data, "prepared/x")
    assert capsys.readouterr().err == ""

    other = _fake_run(tmp_path / "other", task="sft", data_fingerprint="aaaa", labels=data.labels)
    check_data(other, data, "prepared/x")
    assert "was trained on prepared data aaaa, but prepared/x holds bbbb" in capsys.readouterr().err

    head = _fake_run(tmp_path / "head", task="classification", data_fingerprint="aaaa",
                     labels=["negative", "neutral", "positive"])
    with pytest.raises(DomaintuneError, match="trained with labels .*#evaluated-on-other-data"):
        check_data(head, data, "prepared/x")


# Adapter on other base weights, adapter that does not fit ------------------------------------------

def _tiny_llama_like(source: Path, target: Path, hidden: int, seed: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(source)
    config.hidden_size = hidden
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(target)


def test_adapter_on_other_base_weights_is_refused(tiny_model_dir, tiny_overrides, tmp_path):
    from domaintune.export.merge import run_merge
    from domaintune.modeling.runs import load_run_model

    base = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, base)
    cfg = load_config(None, [*tiny_overrides, f"model.name={base}"])
    run_prepare(cfg)
    run_dir = run_train(cfg)
    assert read_json(run_dir / "run_card.json")["base_weights_fingerprint"]
    load_run_model(str(run_dir), cfg)  # the same base: loads

    _tiny_llama_like(tiny_model_dir, base, hidden=32, seed=7)  # same shapes, other weights
    with pytest.raises(DomaintuneError, match="now holds other weights .*#adapter-mismatch"):
        load_run_model(str(run_dir), cfg)
    with pytest.raises(DomaintuneError, match="now holds other weights"):
        run_merge(run_dir)

    _tiny_llama_like(tiny_model_dir, base, hidden=48, seed=7)  # other shapes: PEFT's error, in one line
    card = read_json(run_dir / "run_card.json")
    (run_dir / "run_card.json").write_text(json.dumps({**card, "base_weights_fingerprint": None}))
    with pytest.raises(DomaintuneError, match="adapter/ does not fit base model .*size mismatch") as raised:
        load_run_model(str(run_dir), cfg)
    assert "\n" not in str(raised.value)


def test_sampled_positions_stay_inside_large_tensors():
    from domaintune.modeling.models import sample_positions

    n = 49152 * 576  # SmolLM2's embedding matrix, where a float32 linspace overshot
    positions = sample_positions(n)
    assert positions[0] == 0 and positions[-1] == n - 1 and len(set(positions.tolist())) == 16
    assert sample_positions(1).tolist() == [0] * 16


def test_weights_fingerprint_ignores_heads_that_each_load_initialises(tmp_path):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

    from domaintune.modeling.models import weights_fingerprint

    folder = build_tiny_bert(tmp_path / "bert", ["a", "b"])
    config = BertConfig.from_pretrained(folder)
    torch.manual_seed(1)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)  # a checkpoint without a pooler
    loads = [AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2) for _ in range(2)]
    assert not torch.equal(loads[0].bert.pooler.dense.weight, loads[1].bert.pooler.dense.weight)
    assert weights_fingerprint(loads[0]) == weights_fingerprint(loads[1])
    with torch.no_grad():
        loads[1].bert.encoder.layer[1].output.dense.weight.mul_(1.01)
    assert weights_fingerprint(loads[0]) != weights_fingerprint(loads[1])


# Hub unreachable ------------------------------------------------------------------------------------

def test_unreachable_hub_id_is_one_line(monkeypatch, capsys):
    import huggingface_hub.constants

    from domaintune.cli.main import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on a machine without network
    assert main(["generate", "--text", "좋아요", "model.name=someone/not-cached-here"]) == 2
    err = one_error_line(capsys)
    assert "could not load model 'someone/not-cached-here'" in err
    assert err.endswith("see docs/troubleshooting.md#model-not-found)")


# No chat template ------------------------------------------------------------------------------------

def test_base_without_chat_template_says_why_accuracy_is_missing(tiny_model_dir, tiny_overrides, tmp_path, capsys):
    from domaintune import run_evaluate

    plain = tmp_path / "plain-model"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink()
    cfg = load_config(None, [*tiny_overrides, f"model.name={plain}", "evaluate.max_examples=2",
                             "evaluate.samples=0", "evaluate.general_text="])
    run_prepare(cfg)
    metrics = run_evaluate(cfg)
    assert "accuracy" not in metrics and "perplexity" in metrics
    assert "has no chat template, so labels are not scored" in capsys.readouterr().err
