"""Throughput and near-duplicate recall of the prepare steps on 10k / 30k / 100k documents.

Documents are the embedded drug reviews plus new reviews stitched from their sentences (three to six
sentences of different reviews, so they are not near copies of each other). Into each corpus we plant
10% exact duplicates (case and spacing changed) and 10% near duplicates (one word deleted, replaced or
added in a review of 30+ words). The stages run the real prepare code, on memory-mapped Arrow files:

  A. map + clean into Arrow, filters + exact hash (one map), exact dedup
                                          (prep.formats.iter_rows, prep.store.spool, prep.filters, prep.dedup)
  B. near-duplicate detection             (MinHash band keys, one map, + candidates by sorting each band)
  C. the filter map again with the SmolLM2 tokenizer, as run_prepare runs it (token filters and the
     card's histogram need the counts), reported apart
  Maps use `--num-proc` worker processes once there are 5,000+ rows per worker.

Recall = share of planted near duplicates that stage B removed. `--end-to-end N` also times the whole
`run_prepare` on N documents written as a CSV. `--memory N1 N2 ...` runs `run_prepare` on each size in a
fresh process (the corpus is written by this one, so it never counts) and reports its peak RSS and peak
anonymous memory (what the kernel cannot drop: memory-mapped Arrow pages are file-backed), plus the
growth per extra document between the first and last size. Run:

    PYTHONPATH=src python bench/prepare_bench.py --sizes 10000 30000 100000 --num-proc 2 --end-to-end 100000
    PYTHONPATH=src python bench/prepare_bench.py --sizes --memory 30000 100000 --num-proc 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from domaintune.clean import clean_text, normalized_key
from domaintune.config import load_config
from domaintune.prep.dedup import add_band_keys, drop_exact, drop_near, jaccard, shingles
from domaintune.prep.filters import apply_filters, measure
from domaintune.prep.formats import iter_rows
from domaintune.prep.readers import Table
from domaintune.prep.report import BadRows, StepLog
from domaintune.prep.store import Rows, row_schema, scratch_dir, spool
from domaintune.prepare import _cached_tokenizer, read_data_card, run_prepare
from domaintune.sources import named_dataset

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def base_reviews() -> list[str]:
    tables = named_dataset("drugreviews")
    return [fields["review"] for t in tables.values() for _, fields in t.records if fields["review"].strip()]


def make_corpus(n: int, seed: int = 0) -> tuple[list[tuple[str, dict]], dict[str, str]]:
    """n records, and for each planted near duplicate: its row id -> the text it was made from."""
    rng = random.Random(seed)
    reviews = base_reviews()
    sentences = [s for r in reviews for s in _SENTENCE.split(r) if len(s.split()) >= 4]
    labels = ("negative", "neutral", "positive")
    docs = [(r, labels[i % 3]) for i, r in enumerate(reviews)]
    n_unique = int(n * 0.8)
    while len(docs) < n_unique:
        docs.append((" ".join(rng.sample(sentences, rng.randint(3, 6))), rng.choice(labels)))
    docs = docs[:n_unique]
    planted_near: dict[int, str] = {}
    long_docs = [d for d in docs if len(d[0].split()) >= 30]
    while len(docs) < n:
        if rng.random() < 0.5:
            text, label = rng.choice(docs)
            docs.append(("  " + text.upper() if rng.random() < 0.5 else text.replace(" ", "  "), label))
        else:
            text, label = rng.choice(long_docs)
            words = text.split()
            i = rng.randrange(len(words))
            edit = rng.choice(("delete", "replace", "insert"))
            if edit == "delete":
                del words[i]
            elif edit == "replace":
                words[i] = rng.choice(("really", "very", "also", "still", "never"))
            else:
                words.insert(i, rng.choice(("really", "very", "also", "still", "never")))
            planted_near[len(docs)] = text
            docs.append((" ".join(words), label))
    order = list(range(n))
    rng.shuffle(order)  # copies may now come before their originals, as in real data
    records = [(f"row {k}", {"review": docs[i][0], "rating": docs[i][1]}) for k, i in enumerate(order)]
    return records, {f"bench:row {k}": planted_near[i] for k, i in enumerate(order) if i in planted_near}


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


def write_corpus_csv(n: int, folder: Path) -> Path:
    records, _ = make_corpus(n)
    path = folder / f"bench_{n}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "rating"])
        writer.writerows([fields["review"], fields["rating"]] for _, fields in records)
    return path


def _prepare_config(path: Path, out: Path, num_proc: int):
    return load_config(None, [f"data.source={path}", f"data.output_dir={out}", f"data.num_proc={num_proc}"])


def end_to_end(n: int, num_proc: int, folder: Path) -> dict:
    """`run_prepare` on the corpus written as a CSV: reading, every step, token histogram, writing."""
    cfg = _prepare_config(write_corpus_csv(n, folder), folder / "out", num_proc)
    start = time.perf_counter()
    card = read_data_card(run_prepare(cfg))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"end_to_end_docs": n, "seconds": round(seconds, 1), "docs_per_s": round(n / seconds),
            "peak_rss_mib": round(peak),
            "rows": card["rows"], "steps": {s["step"]: s["rows_out"] for s in card["steps"]}}


def _anonymous_kib() -> int:
    """Anonymous (not file-backed) memory of this process, from /proc/self/smaps_rollup."""
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


def memory_child(path: str, num_proc: int) -> None:
    """Run in a fresh process: run_prepare on `path`, sampling anonymous memory every 20 ms."""
    peak, stop = [_anonymous_kib()], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _anonymous_kib())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run_prepare(_prepare_config(Path(path), Path(folder) / "out", num_proc))
        seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    print(json.dumps({
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_anonymous_mib": round(max(peak[0], _anonymous_kib()) / 1024, 1),
        "largest_worker_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }))


def memory(sizes: list[int], num_proc: int) -> None:
    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            path = write_corpus_csv(n, Path(folder))
            child = subprocess.run([sys.executable, __file__, "--memory-child", str(path), "--num-proc", str(num_proc)],
                                   capture_output=True, text=True, check=True, env=os.environ)
            figures[n] = json.loads(child.stdout.strip().splitlines()[-1])
            print(json.dumps({"memory_docs": n, **figures[n], "load_avg": os.getloadavg()}), flush=True)
            path.unlink()
    if len(sizes) > 1:
        first, last = figures[sizes[0]], figures[sizes[-1]]
        extra = sizes[-1] - sizes[0]
        print(json.dumps({"per_extra_doc_kib": {
            key: round((last[key] - first[key]) * 1024 / extra, 2) for key in ("peak_rss_mib", "peak_anonymous_mib")
        }}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--end-to-end", type=int, default=0, help="also time run_prepare on a CSV of this size")
    parser.add_argument("--memory", type=int, nargs="*", default=[], help="peak memory of run_prepare per size")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.num_proc)
        return
    print(json.dumps({"load_avg_at_start": os.getloadavg()}), flush=True)
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps({**run(n, args.num_proc, Path(folder)), "load_avg": os.getloadavg()}), flush=True)
    if args.end_to_end:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps({**end_to_end(args.end_to_end, args.num_proc, Path(folder)),
                              "load_avg": os.getloadavg()}), flush=True)
    if args.memory:
        memory(args.memory, args.num_proc)


if __name__ == "__main__":
    main()
