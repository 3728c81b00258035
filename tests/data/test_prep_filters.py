"""Noise filters and dedup: pure functions, milliseconds."""

from domaintune.core.config import load_config
from domaintune.core.schema import DedupConfig
from domaintune.data.dedup import add_band_keys, drop_exact, drop_near, keyed, near_matches, shingles
from domaintune.data.filters import apply_filters, measure, repeated_ngram_ratio, script_share, symbol_ratio
from domaintune.data.report import StepLog
from domaintune.data.store import Rows


class WordTokenizer:
    """A stand-in tokenizer: one token per word."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_filter_measures():
    assert repeated_ngram_ratio("buy now " * 10, 2) > 0.8
    assert repeated_ngram_ratio("every word here is different from the others", 3) == 0.0
    assert symbol_ratio("!!!???***ab") > 0.8 and symbol_ratio("plain words") == 0.0
    assert script_share("이 약은 좋아요 OK", "hangul") > 0.7
    assert script_share("this is english", "hangul") == 0.0
    assert script_share("1234 😀", "latin") == 1.0, "no letters: nothing to judge"


def test_filters_report_counts_and_examples():
    data = load_config(None, [
        "data.min_chars=5", "data.filters.max_chars=60", "data.filters.max_symbol_ratio=0.5",
        "data.filters.script=hangul", "data.filters.max_repeated_ngram_ratio=0.5", "data.filters.ngram_size=2",
        "data.filters.min_tokens=2",
    ]).data
    texts = ["이 약은 효과가 좋았어요 😀", "짧다", "가" * 70, "!!!@@@###$$$ 약", "this is english text only",
             "광고 광고 광고 광고 광고 광고 광고 광고", "한단어입니다요"]
    log = StepLog()
    rows = measure(Rows.from_list([{"text": t} for t in texts]), data, WordTokenizer(), None)
    assert rows.arrays["tokens"].tolist() == [len(t.split()) for t in texts]
    kept = apply_filters(rows, data, log)
    assert [kept.text(i) for i in range(len(kept))] == ["이 약은 효과가 좋았어요 😀"], "Hangul and emoji pass"
    assert log.steps[0]["removed"] == {"min_chars": 1, "max_chars": 1, "max_symbol_ratio": 1, "script_hangul": 1,
                                       "max_repeated_ngram_ratio": 1, "min_tokens": 1}
    assert log.examples["script_hangul"] == ["this is english text only"]


def test_shingles_word_for_english_char_for_korean():
    assert "took the pill" in shingles("I took the pill!", "auto", 3, 4)
    korean = shingles("약을 먹었어요", "auto", 3, 4)
    assert "약을 먹" in korean and all(len(s) == 4 for s in korean)


def _rows(texts):
    return keyed([{"id": str(i), "text": t} for i, t in enumerate(texts)])


def _ids(rows):
    return [r["id"] for batch in rows.batches() for r in batch]


def test_exact_and_near_dedup_keep_the_first_copy():
    base = ("the new medication reduced my migraines from four a week to one and the only side effect "
            "was a dry mouth during the first days of treatment")
    korean = "이 약을 먹고 나서 두통이 거의 사라졌고 부작용은 첫 주에 약간의 어지러움뿐이었습니다 정말 추천합니다"
    texts = [base, base.upper(), base.replace("dry", "very dry"), "an unrelated review about sleep aids",
             korean, korean.replace("정말", "진짜")]
    log = StepLog()
    rows = drop_exact(_rows(texts), log)
    assert _ids(rows) == ["0", "2", "3", "4", "5"]
    cfg = DedupConfig()
    kept = drop_near(add_band_keys(rows, cfg, None), cfg, log)
    assert _ids(kept) == ["0", "3", "4"], "near copies (English and Korean) go, first kept"
    assert log.steps[-1]["removed"] == {"near_duplicate": 2} and kept.arrays["bands"].shape[0] == 3
    query = keyed([{"text": base.replace("treatment", "therapy")}], cfg)
    assert near_matches(query, kept, cfg).tolist() == [True]


def test_near_dedup_threshold_is_respected():
    a = "one two three four five six seven eight nine ten eleven twelve"
    b = "one two three four five six seven eight nine ten zebra yak"
    loose, strict = DedupConfig(threshold=0.5), DedupConfig(threshold=0.95)
    for cfg, expected in ((loose, 1), (strict, 2)):
        kept = drop_near(add_band_keys(_rows([a, b]), cfg, None), cfg, StepLog())
        assert len(kept) == expected
