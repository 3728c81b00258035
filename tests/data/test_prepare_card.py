"""Whole `prepare` runs on small files written here: mixed sources, Korean, card and CLI agree."""

import json
import random

import pytest

from conftest import make_reviews, write_csv
from domaintune.cli.main import main
from domaintune.core.config import load_config
from domaintune.core.errors import DomaintuneError
from domaintune.data.prepare import read_data_card, read_split, run_prepare

KOREAN = [
    "이 약은 두통에 정말 효과가 좋았어요", "부작용 때문에 일주일 만에 끊었습니다", "그냥 그랬어요 큰 변화는 없네요",
]


def _korean_cp949(path, n):
    rng = random.Random(0)
    lines = ["review,rating,drugName"]
    for i in range(n):
        label = ("positive", "negative", "neutral")[i % 3]
        # random syllables make each review distinct enough not to be a near duplicate of another
        words = " ".join("".join(chr(0xAC00 + rng.randrange(2350)) for _ in range(3)) for _ in range(6))
        lines.append(f"\"{KOREAN[i % 3]} {words}, 연락처 010-1234-{1000 + i:04d}\",{label},약{i % 5}")
    path.write_bytes(("\n".join(lines) + "\n").encode("cp949"))
    return path


def test_mixed_sources_card_counts_add_up(tmp_path, capsys):
    english = make_reviews(40)
    english.append(dict(english[0]))                                     # exact duplicate
    english.append({**english[1], "review": english[1]["review"] + " really"})  # near duplicate
    english.append({"review": "<b>&lt;3</b>", "rating": "bogus", "drugName": "x"})  # unknown label
    main_csv = write_csv(tmp_path / "en.csv", english)
    korean = _korean_cp949(tmp_path / "kr.csv", 30)
    out = tmp_path / "out"
    argv = ["prepare", f"data.source={main_csv}", f"data.output_dir={out}", "data.labels=[negative,neutral,positive]",
            f"data.sources=[{{path: {korean}, weight: 2}}]", "data.clean.mask_phone=true",
            "data.augment.method=eda", "data.group_column=drugName"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    card = read_data_card(out)

    read = card.steps[0]
    assert read.rows_in == 73 and read.removed == {"unknown label 'bogus'": 1}
    assert card.dedup.model_dump() == {"exact": 1, "near": 1, "threshold": 0.8, "shingle": "auto"}
    for step in card.steps:
        assert step.rows_in - sum(step.removed.values()) + sum((step.added or {}).values()) == step.rows_out, step
    train = read_split(out, "train")
    assert len(train) == card.rows["train"] and sum(r.get("augmented", False) for r in train) \
        == card.augmented_rows > 0
    assert not any(r.get("augmented") for r in read_split(out, "val") + read_split(out, "test"))
    korean_rows = [r for r in train if r["source"] == "kr.csv" and not r.get("augmented")]
    assert any(r["id"].endswith("#2") for r in korean_rows), "weight 2 repeats Korean rows"
    assert all("[PHONE]" in r["text"] and "010-" not in r["text"] for r in korean_rows)
    assert any(KOREAN[0] in r["text"] for r in korean_rows), "Hangul survives decoding and cleaning"
    homes = {}
    for name in ("train", "val", "test"):
        for row in read_split(out, name):
            homes.setdefault(row["group"], set()).add(name)
    assert all(len(h) == 1 for h in homes.values())

    assert f"splits: train {card.rows['train']}, val {card.rows['val']}, test {card.rows['test']}" in printed
    assert f"read 73 records from 2 source(s); {card.bad_rows.count} malformed skipped" in printed
    assert card.fingerprint in printed
    assert (out / "token_lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert card.token_lengths.splits["train"].max > 0
    markdown = (out / "data_card.md").read_text()
    assert "unknown label 'bogus'" in markdown and "token_lengths.png" in markdown


def test_fingerprint_follows_inputs_and_config_not_output_dir(tmp_path):
    path = write_csv(tmp_path / "r.csv", make_reviews(30))

    def fingerprint(*extra):
        cfg = load_config(None, [f"data.source={path}", f"data.output_dir={tmp_path / extra[0]}", *extra[1:]])
        return read_data_card(run_prepare(cfg)).fingerprint

    first = fingerprint("a")
    assert fingerprint("b") == first
    assert fingerprint("c", "data.dedup.threshold=0.9") != first


def test_strict_run_fails_and_writes_nothing(tmp_path):
    rows = make_reviews(20) + [{"review": "", "rating": "positive", "drugName": "x"}]
    path = write_csv(tmp_path / "r.csv", rows)
    cfg = load_config(None, [f"data.source={path}", f"data.output_dir={tmp_path / 'out'}", "data.strict=true"])
    with pytest.raises(DomaintuneError, match=r"r\.csv: line 22: empty text"):
        run_prepare(cfg)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_instruction_data_prepares_with_messages(tmp_path):
    path = tmp_path / "inst.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"질문 {i}: 이 약의 용량은?", "output": f"답 {i}: 하루 {i} 정"},
                                       ensure_ascii=False) + "\n" for i in range(20)))
    cfg = load_config(None, [f"data.source={path}", f"data.output_dir={tmp_path / 'out'}", "data.format=instruction",
                             "data.dedup.near=false"])
    out = run_prepare(cfg)
    rows = read_split(out, "train")
    assert rows and all(r["messages"][0]["role"] == "user" and r["messages"][1]["role"] == "assistant" for r in rows)
    assert read_data_card(out).labels is None
