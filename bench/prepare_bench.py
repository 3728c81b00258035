"""Throughput and near-duplicate recall of the prepare steps on 10k / 30k / 100k documents.

The corpus (bench/prepare_corpus.py): drug reviews plus stitched reviews, with 10% planted exact and
10% planted near duplicates. The stages run the real prepare code, on memory-mapped Arrow files:

  A. map + clean into Arrow, filters + exact hash (one map), exact dedup
                                          (prep.formats.iter_rows, prep.store.spool, prep.filters, prep.dedup)
  B. near-duplicate detection             (MinHash band keys, one map, + candidates by sorting each band)
  C. the filter map again with the SmolLM2 tokenizer, as run_prepare runs it (token filters and the
     card's histogram need the counts), reported apart
  Maps use `--num-proc` worker processes once there are 10,000+ rows per worker.

Recall = share of planted near duplicates that stage B removed. `--end-to-end N` also times the whole
`run_prepare` on N documents written as a CSV (memory: bench/prepare_memory.py). Run:

    PYTHONPATH=src python bench/prepare_bench.py --sizes 10000 30000 100000 --num-proc 2 --end-to-end 100000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from prepare_corpus import make_corpus, write_corpus_csv

from domaintune.core.config import load_config
from domaintune.data.clean import clean_text, normalized_key
from domaintune.data.dedup import add_band_keys, drop_exact, drop_near, jaccard, shingles
from domaintune.data.filters import apply_filters, measure
from domaintune.data.formats import iter_rows
from domaintune.data.prepare import _cached_tokenizer, read_data_card, run_prepare
from domaintune.data.readers import Table
from domaintune.data.report import BadRows, StepLog
from domaintune.data.store import Rows, row_schema, scratch_dir, spool


def run(n: int, num_proc: int, folder: Path) -> dict:
    records, planted = make_corpus(n)
    data = load_config(None, [
        "data.filters.max_chars=5000", "data.filters.max_symbol_ratio=0.3", "data.filters.script=latin",
        "data.filters.max_repeated_ngram_ratio=0.5", f"data.num_proc={num_proc}",
    ]).data
    table = Table("bench", "-", records)
    log = StepLog()
    with scratch_dir(folder / "out") as scratch:
        start = time.perf_counter()
        pool = Rows(spool(iter_rows(table, data, BadRows(strict=False)), row_schema(data), scratch / "pool.arrow"))
        rows = drop_exact(apply_filters(measure(pool, data, None, num_proc), data, log), log)
        stage_a = time.perf_counter() - start

        start = time.perf_counter()
        kept = drop_near(add_band_keys(rows, data.dedup, num_proc), data.dedup, log)
        stage_b = time.perf_counter() - start

        tokenizer = _cached_tokenizer("smollm2-135m", None)  # loaded before the clock starts
        start = time.perf_counter()
        measure(rows, data, tokenizer, num_proc)
        stage_c = time.perf_counter() - start
        rows = [r for batch in rows.batches() for r in batch]
        kept = [r for batch in kept.batches() for r in batch]

    # A planted pair is found when copy and original do not both survive: dedup keeps whichever comes
    # first, so sometimes the copy stays and the original goes. Exact copies of the original were already
    # merged in stage A, hence the normalized-key comparison.
    kept_keys = {normalized_key(r["text"]) for r in kept}
    kept_ids = {r["id"] for r in kept}
    text_of = {r["id"]: r["text"] for r in rows}
    cfg = data.dedup
    similar = {}  # planted row id -> true Jaccard with its original, on the shingles dedup uses
    for row_id, original in planted.items():
        if row_id in text_of:
            a = shingles(text_of[row_id], cfg.shingle, cfg.word_ngram, cfg.char_ngram)
            similar[row_id] = jaccard(a, shingles(clean_text(original), cfg.shingle, cfg.word_ngram, cfg.char_ngram))
    missed = {row_id for row_id, original in planted.items()
              if row_id in kept_ids and normalized_key(clean_text(original)) in kept_keys}
    above = [row_id for row_id, j in similar.items() if j >= cfg.threshold]
    recall = 1 - len(missed) / max(len(planted), 1)
    recall_above = 1 - len(missed & set(above)) / max(len(above), 1)
    return {
        "docs": n, "stage_a_s": round(stage_a, 2), "stage_a_docs_per_s": round(n / stage_a),
        "stage_b_docs": len(rows), "stage_b_s": round(stage_b, 2), "stage_b_docs_per_s": round(len(rows) / stage_b),
        "filter_map_with_tokens_docs_per_s": round(len(rows) / stage_c),
        "filtered": sum(log.steps[0]["removed"].values()), "exact_removed": log.steps[1]["removed"]["exact_duplicate"],
        "near_removed": len(rows) - len(kept), "planted_near": len(planted),
        "planted_near_recall": round(recall, 4), "planted_at_or_above_threshold": len(above),
        "recall_at_or_above_threshold": round(recall_above, 4), "kept": len(kept),
    }


def _prepare_config(path: Path, out: Path, num_proc: int):
    return load_config(None, [f"data.source={path}", f"data.output_dir={out}", f"data.num_proc={num_proc}"])


def end_to_end(n: int, num_proc: int, folder: Path) -> dict:
    """`run_prepare` on the corpus written as a CSV: reading, every step, token histogram, writing."""
    cfg = _prepare_config(write_corpus_csv(n, folder), folder / "out", num_proc)
    start = time.perf_counter()
    card = read_data_card(run_prepare(cfg))
    seconds = time.perf_counter() - start
    return {"end_to_end_docs": n, "seconds": round(seconds, 1), "docs_per_s": round(n / seconds),
            "rows": card["rows"], "steps": {s["step"]: s["rows_out"] for s in card["steps"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--end-to-end", type=int, default=0, help="also time run_prepare on a CSV of this size")
    args = parser.parse_args()
    print(json.dumps({"load_avg_at_start": os.getloadavg()}), flush=True)
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps({**run(n, args.num_proc, Path(folder)), "load_avg": os.getloadavg()}), flush=True)
    if args.end_to_end:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps({**end_to_end(args.end_to_end, args.num_proc, Path(folder)),
                              "load_avg": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
