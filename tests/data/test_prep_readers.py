"""Readers and format mapping on small files written here: encodings, quoting, bad rows with lines."""

import csv
import json

import pytest

from domaintune.core.config import load_config
from domaintune.core.errors import DomaintuneError
from domaintune.data import readers
from domaintune.data.formats import rows_from_table
from domaintune.data.readers import decode_bytes, read_source
from domaintune.data.report import BadRows

KOREAN = "이 약은 정말 효과가 좋았어요"


def _read(path, *overrides, strict=False):
    data = load_config(None, list(overrides)).data
    bad = BadRows(strict)
    tables = read_source(path, data.encoding, data.text_unit, bad)
    rows = rows_from_table(tables["train"], data, bad)
    return rows, bad, tables


def test_cp949_csv_is_detected_and_decoded(tmp_path):
    path = tmp_path / "kr.csv"
    path.write_bytes(f"review,rating\n{KOREAN},positive\n별로였어요,negative\n".encode("cp949"))
    rows, bad, tables = _read(path)
    assert [r["text"] for r in rows] == [KOREAN, "별로였어요"]
    assert tables["train"].encoding == "cp949" and not bad.rows


def test_large_cp949_file_streams_with_characters_across_read_chunks(tmp_path):
    """Detection reads 1 MiB at a time: two-byte characters cut by a chunk edge must still decode."""
    path = tmp_path / "big.csv"
    lines = ["review,rating"] + [f"{KOREAN} {i},positive" for i in range(60_000)]
    path.write_bytes(("\n".join(lines) + "\n").encode("cp949"))
    assert path.stat().st_size > 2 * (1 << 20)
    tables = read_source(path, "auto", "file", BadRows(False))
    assert tables["train"].encoding == "cp949" and tables["train"].count == 0, "nothing read before iterating"
    rows, bad, _ = _read(path)
    assert len(rows) == 60_000 and rows[-1]["text"] == f"{KOREAN} 59999" and not bad.rows


def test_jsonl_value_with_a_unicode_line_separator_stays_one_record(tmp_path):
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps({"review": "one\u2028two", "rating": "positive"}, ensure_ascii=False) + "\n"
                    + json.dumps({"review": "three", "rating": "negative"}) + "\n", encoding="utf-8")
    rows, bad, _ = _read(path)
    assert [r["id"] for r in rows] == ["sep.jsonl:line 1", "sep.jsonl:line 2"] and not bad.rows


def test_utf8_bom_and_quoted_multiline_fields(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes('\ufeffreview,rating\n"first line\nsecond, with comma",positive\nplain,negative\n'
                     .encode("utf-8"))
    rows, bad, _ = _read(path)
    assert [r["text"] for r in rows] == ["first line second, with comma", "plain"]
    assert [r["id"] for r in rows] == ["bom.csv:line 2", "bom.csv:line 4"]


def test_malformed_csv_rows_are_counted_with_lines(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"review,rating\n"
        b"good one,positive\n"            # 2 ok
        b"too,many,columns\n"             # 3 wrong column count
        b'"broken"quote,positive\n'       # 4 broken quoting
        b",positive\n"                    # 5 empty text
        b"no label,\n"                    # 6 missing label
        b"bin\x00ary,positive\n"          # 7 binary garbage
        b"last,neutral\n"                 # 8 ok
    )
    rows, bad, _ = _read(path)
    assert [r["text"] for r in rows] == ["good one", "last"]
    where = {r["where"]: r["reason"] for r in bad.rows}
    assert where["line 3"] == "expected 2 columns, found 3"
    assert where["line 4"].startswith("broken quoting")
    assert where["line 5"] == "empty text"
    assert where["line 6"] == "missing label"
    assert where["line 7"] == "binary or undecodable bytes"
    assert bad.summary()["count"] == 5
    assert bad.rows[0]["sample"] == "too,many,columns" and '"no label"' in bad.rows[3]["sample"]


def test_unclosed_quote_reports_lost_lines(tmp_path):
    path = tmp_path / "open.csv"
    path.write_text('review,rating\nfine,positive\n"never closed,negative\nlost,neutral\n')
    rows, bad, _ = _read(path)
    assert [r["text"] for r in rows] == ["fine"]
    assert bad.rows[0]["where"] == "line 3" and "lines 3-4 lost" in bad.rows[0]["reason"]


def _write_rows(path, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("review", "rating"), *rows])
    return path


def test_csv_field_over_128_kib_is_read_whole(tmp_path):
    long = 'a "quoted" word, then a line end\n' * 8000  # 256 KiB, twice Python's default field limit
    path = _write_rows(tmp_path / "long.csv", [(long, "positive"), ("after", "negative")])
    rows, bad, _ = _read(path)
    assert bad.summary()["count"] == 0 and [r["text"] for r in rows][1] == "after"
    assert rows[0]["text"].count("quoted") == 8000 and rows[1]["id"] == "long.csv:line 8003"


def test_csv_field_over_the_limit_is_one_bad_row_never_new_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "FIELD_LIMIT", 1000)
    # Inside the long field: lines that would parse as rows, escaped quotes and delimiters.
    long = "".join(f'fake "row" {i},positive\n' for i in range(100))
    path = _write_rows(tmp_path / "over.csv", [("before", "positive"), (long, "negative"), ("after", "neutral")])
    rows, bad, _ = _read(path)
    assert [r["text"] for r in rows] == ["before", "after"] and rows[1]["id"] == "over.csv:line 104"
    assert [(b["where"], b["reason"]) for b in bad.rows] == [
        ("line 3", "a field over 1000 characters (lines 3-103 skipped)")]
    unquoted = _write_rows(tmp_path / "unquoted.csv", [("x" * 2000, "negative"), ("after", "neutral")])
    rows, bad, _ = _read(unquoted)
    assert [r["text"] for r in rows] == ["after"] and bad.rows[0]["where"] == "line 2"
    open_quote = tmp_path / "open.csv"
    open_quote.write_text('review,rating\nfine,positive\n"' + "never closed\n" * 100 + "lost,neutral\n")
    rows, bad, _ = _read(open_quote)
    assert [r["text"] for r in rows] == ["fine"]
    assert bad.rows[0]["reason"] == "a field over 1000 characters whose quote never closes (lines 3-103 lost)"


def test_strict_stops_at_first_bad_row_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"review": "ok", "rating": "positive"}\n{not json}\n')
    with pytest.raises(DomaintuneError, match=r"bad\.jsonl: line 2: invalid JSON .*data\.strict is true"):
        _read(path, strict=True)


def test_jsonl_json_and_unknown_labels(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"review": "a", "rating": "1"}\n[1, 2]\n{"review": "b", "rating": "9"}\n\n')
    rows, bad, _ = _read(jsonl, "data.label_map={'1': negative, '5': positive}")
    assert [(r["text"], r["label"]) for r in rows] == [("a", "negative")]
    assert [(r["where"], r["reason"].split(" (")[0]) for r in bad.rows] == [
        ("line 2", "a JSON list, not an object"), ("line 3", "unknown label '9'")]

    array = tmp_path / "d.json"
    array.write_text(json.dumps({"data": [{"review": KOREAN, "rating": "positive"}]}, ensure_ascii=False))
    rows, _, _ = _read(array)
    assert rows[0]["text"] == KOREAN and rows[0]["id"] == "d.json:item 1"


def test_parquet_and_hf_save_to_disk(tmp_path):
    import pandas as pd
    from datasets import Dataset, DatasetDict

    frame = pd.DataFrame({"review": ["p one", "p two"], "rating": ["positive", "negative"]})
    frame.to_parquet(tmp_path / "d.parquet")
    rows, _, _ = _read(tmp_path / "d.parquet")
    assert [r["text"] for r in rows] == ["p one", "p two"]

    DatasetDict({"train": Dataset.from_pandas(frame), "test": Dataset.from_pandas(frame.iloc[:1])}).save_to_disk(
        str(tmp_path / "hf"))
    rows, _, tables = _read(tmp_path / "hf")
    assert len(rows) == 2 and len(list(tables["test"].records)) == 1


def test_text_files_and_folders_by_file_and_paragraph(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("첫 문단입니다.\n같은 문단.\n\n\n두 번째 문단.\n")
    (folder / "sub" / "b.md").write_text("# Title\n\nBody text.\n")
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    by_file, _, _ = _read(folder, "data.format=text")
    assert [r["text"] for r in by_file] == ["첫 문단입니다.\n같은 문단.\n\n두 번째 문단.", "# Title\n\nBody text."]
    by_paragraph, _, _ = _read(folder, "data.format=text", "data.text_unit=paragraph")
    assert [r["id"] for r in by_paragraph] == ["notes:a.txt line 1", "notes:a.txt line 5",
                                               "notes:sub/b.md line 1", "notes:sub/b.md line 3"]
    single = tmp_path / "one.txt"
    single.write_text("line one\nline two\n")
    lines, _, _ = _read(single, "data.format=text", "data.text_unit=line")
    assert [r["text"] for r in lines] == ["line one", "line two"]
    with pytest.raises(DomaintuneError, match="plain-text input has no labels"):
        _read(single)


def test_instruction_and_chat_formats_become_messages(tmp_path):
    path = tmp_path / "inst.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"instruction": "요약하세요", "input": "긴 글", "output": "짧은 글"},
        {"instruction": "Say hi", "output": ""},
    ]) + "\n")
    rows, bad, _ = _read(path, "data.format=instruction")
    assert rows[0]["messages"] == [{"role": "user", "content": "요약하세요\n\n긴 글"},
                                   {"role": "assistant", "content": "짧은 글"}]
    assert rows[0]["text"] == "요약하세요\n\n긴 글\n\n짧은 글" and rows[0]["label"] is None
    assert bad.rows[0]["reason"].startswith("malformed instruction row (empty instruction or output)")

    chat = tmp_path / "chat.csv"
    good = json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    chat.write_text('messages\n"' + good.replace('"', '""') + '"\n"[{""role"": ""user"", ""content"": ""x""}]"\n')
    rows, bad, _ = _read(chat, "data.format=chat")
    assert rows[0]["messages"][1] == {"role": "assistant", "content": "hello"}
    assert "no assistant turn" in bad.rows[0]["reason"]


def test_decode_keeps_utf8_with_a_stray_bad_byte():
    data = ("review\n" + "\n".join(f"{KOREAN} {i}" for i in range(200)) + "\n").encode() + b"bad \xff byte\n"
    text, encoding = decode_bytes(data, "auto", "x.csv")
    assert encoding == "utf-8" and KOREAN in text and "\ufffd" in text


def test_mostly_ascii_cp949_file_is_still_cp949():
    data = ("review\n" + "\n".join(f"plain {i}" for i in range(300)) + f"\n{KOREAN}\n").encode("cp949")
    text, encoding = decode_bytes(data, "auto", "x.csv")
    assert encoding == "cp949" and KOREAN in text


def test_explicit_encoding_error_names_the_setting():
    with pytest.raises(DomaintuneError, match=r"x\.csv: cannot be decoded as ascii .*set data\.encoding"):
        decode_bytes(KOREAN.encode(), "ascii", "x.csv")
