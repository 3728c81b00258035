"""The Korean quickstart (docs/ko/quickstart.md) on its shipped data `ko_reviews`: what prepare makes of
each kind of noise, the cp949 path, and the whole path (prepare, train a classification head with LoRA,
evaluate, TF-IDF baseline, compare) on a tiny BERT whose vocabulary is the reviews' syllables."""

from __future__ import annotations

import importlib.util
import json
import re
import string
import unicodedata
from importlib import resources
from pathlib import Path

import pytest

from conftest import build_tiny_bert
from domaintune import load_config, run_compare, run_evaluate, run_prepare, run_train
from domaintune.core.io import read_json
from domaintune.evaluation.baseline import run_baseline
from domaintune.reporting.compare import LatencySettings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "ko_quickstart.yaml"
JAMO = re.compile("[\u1100-\u11ff]")  # conjoining jamo: what NFD text is made of
HANGUL = re.compile("[\uac00-\ud7a3]")


def shipped_text() -> str:
    return resources.files("domaintune").joinpath("data/ko_reviews.csv").read_text(encoding="utf-8")


def prepared(folder: Path) -> dict[str, list[dict]]:
    return {s: [json.loads(line) for line in (folder / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()]
            for s in ("train", "val", "test")}


def ko_overrides(root: Path, *extra: str) -> list[str]:
    return [f"data.output_dir={root / 'prepared'}", f"train.output_dir={root / 'runs' / 'lora'}",
            f"evaluate.base_output_dir={root / 'runs' / 'base'}",
            f"evaluate.baseline_output_dir={root / 'runs' / 'tfidf'}", *extra]


@pytest.fixture(scope="module")
def ko_bert(tmp_path_factory) -> Path:
    syllables = {c for c in unicodedata.normalize("NFC", shipped_text()) if not c.isascii() and not c.isspace()}
    vocabulary = [*syllables, *(f"##{c}" for c in syllables), *string.punctuation, *string.ascii_letters]
    return build_tiny_bert(tmp_path_factory.mktemp("ko-bert"), vocabulary, lowercase=False)


def test_shipped_file_is_what_the_tool_writes():
    spec = importlib.util.spec_from_file_location("make_ko_reviews", ROOT / "tools" / "make_ko_reviews.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    text = tool.render(tool.build_rows())
    assert text == shipped_text()
    assert text.count("\n") - 1 == 187 and len(text.encode("utf-8")) < 100_000


def test_prepare_cleans_every_kind_of_noise(tmp_path):
    folder = run_prepare(load_config(CONFIG, ko_overrides(tmp_path, "model.name=/nonexistent-model")))
    card = read_json(folder / "data_card.json")
    assert card["bad_rows"]["by_reason"] == {"expected 4 columns, found 6": 1, "broken quoting": 1,
                                             "empty text": 1, "missing label": 1, "unknown label '별로'": 1}
    removed = {rule: n for step in card["steps"] for rule, n in step["removed"].items()}
    assert removed["script_hangul"] == 2 and removed["exact_duplicate"] == 6 and removed["near_duplicate"] == 5
    assert card["rows"] == {"train": 118, "val": 18, "test": 33}
    assert card["garbled_rows"]["rows"] == 0

    texts = [r["text"] for rows in prepared(folder).values() for r in rows]
    assert all(HANGUL.search(t) for t in texts) and not any(JAMO.search(t) for t in texts)
    joined = "\n".join(texts)
    assert (joined.count("[EMAIL]"), joined.count("[URL]"), joined.count("[PHONE]")) == (4, 4, 4)
    for raw in ("@example", "http", "www.", "010-", "<br>", "<b>", "&amp;", "&quot;", "&#39;", "\xa0"):
        assert raw not in joined, raw
    assert "<배송 후기>" in joined  # an escaped bracket is text, not a tag, and stays

    # The rows written decomposed (NFD) come out composed, equal to their NFC form.
    reviews = [line.split(",", 3)[3] for line in shipped_text().splitlines()[1:] if line.count(",") >= 3]
    decomposed = [r for r in reviews if not unicodedata.is_normalized("NFC", r)]
    assert len(decomposed) == 10
    for review in decomposed:
        assert " ".join(unicodedata.normalize("NFC", review).split()) in texts


def test_cp949_copy_prepares_the_same_rows(tmp_path):
    cp949 = tmp_path / "ko_reviews_cp949.csv"
    cp949.write_bytes(unicodedata.normalize("NFC", shipped_text()).encode("cp949"))  # what Korean Excel saves
    utf8 = run_prepare(load_config(CONFIG, ko_overrides(tmp_path / "utf8", "model.name=/nonexistent-model")))
    legacy = run_prepare(load_config(CONFIG, ko_overrides(tmp_path / "cp949", "model.name=/nonexistent-model",
                                                          f"data.source={cp949}")))
    assert read_json(legacy / "data_card.json")["sources"]["ko_reviews_cp949.csv"]["encoding"] == "cp949"
    for split, rows in prepared(utf8).items():
        assert [(r["text"], r["label"]) for r in rows] == [(r["text"], r["label"]) for r in prepared(legacy)[split]]


def test_syllable_vocabulary_needs_a_cased_tokenizer(ko_bert):
    from transformers import AutoTokenizer, BertTokenizerFast

    text = "정말 만족합니다. 배송이 하루 만에 왔어요."
    cased = AutoTokenizer.from_pretrained(ko_bert)
    assert len(cased) > 500 and cased.unk_token not in cased.tokenize(text)
    # Lowercasing strips accents through NFD: every syllable falls apart into jamo the vocabulary lacks.
    uncased = BertTokenizerFast(vocab=str(ko_bert / "vocab.txt"), do_lower_case=True)
    assert set(uncased.tokenize(text)) - set(string.punctuation) == {uncased.unk_token}


def test_quickstart_end_to_end_on_a_tiny_korean_bert(ko_bert, tmp_path):
    cfg = load_config(CONFIG, ko_overrides(tmp_path, f"model.name={ko_bert}", "train.max_steps=4",
                                           "train.logging_steps=1", "evaluate.batch_size=16"))
    run_prepare(cfg)
    run_dir = run_train(cfg)
    card = read_json(run_dir / "run_card.json")
    assert (card["task"], card["labels"]) == ("classification", ["negative", "neutral", "positive"])
    assert card["steps"] == 4 and card["base_weights_fingerprint"]

    lora = run_evaluate(cfg, str(run_dir))
    assert lora["test_rows"] == 33 and sum(c["support"] for c in lora["per_class"].values()) == 33
    tfidf = run_baseline(cfg)
    # The sentences are label-specific, so the bag of words separates the labels; this also proves
    # the split keeps every label in test.
    assert tfidf["accuracy"] > 0.6 and set(tfidf["per_class"]) == {"negative", "neutral", "positive"}

    # With timing asked for: the classifier is timed by its forward pass, the baseline by its predict.
    report = run_compare([run_dir, cfg.evaluate.baseline_output_dir], tmp_path / "compare", latency=LatencySettings())
    rows = read_json(report.parent / "comparison.json")["rows"]
    assert [r["variant"] for r in rows] == ["lora", "lora-merged", "tfidf-logreg"]
    assert [r["accuracy"] for r in rows] == [lora["accuracy"], lora["accuracy"], tfidf["accuracy"]]
    assert [r["latency_kind"] for r in rows] == ["classify", "classify", "tfidf-predict"]
    assert all(r["latency_p50_ms"] > 0 for r in rows)
