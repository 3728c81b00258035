"""The benchmark corpus of the prepare benchmarks (bench/prepare_bench.py, bench/prepare_memory.py).

Documents are the embedded drug reviews plus new reviews stitched from their sentences (three to six
sentences of different reviews, so they are not near copies of each other). Into each corpus we plant
10% exact duplicates (case and spacing changed) and 10% near duplicates (one word deleted, replaced or
added in a review of 30+ words), shuffled so that a copy may come before its original.

Only `named_dataset` is used, so the memory benchmark can also run an older tree of the project.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

try:
    from domaintune.data.sources import named_dataset
except ImportError:  # a tree from before the packages by layer
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


def write_corpus_csv(n: int, folder: Path) -> Path:
    records, _ = make_corpus(n)
    path = folder / f"bench_{n}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "rating"])
        writer.writerows([fields["review"], fields["rating"]] for _, fields in records)
    return path


if __name__ == "__main__":  # python bench/prepare_corpus.py 30000 /tmp/corpus  -> /tmp/corpus/bench_30000.csv
    import sys

    print(write_corpus_csv(int(sys.argv[1]), Path(sys.argv[2])))
