"""Near dedup and the near-leak check against datasketch's own MinHashLSH, and the map in workers."""

import random

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from domaintune.core.config import load_config
from domaintune.core.schema import DedupConfig
from domaintune.data import store
from domaintune.data.dedup import (
    _signature_batch,
    add_band_keys,
    jaccard,
    keyed,
    near_duplicate_of,
    near_matches,
    shingles,
)
from domaintune.data.filters import measure
from domaintune.data.store import Rows, row_schema, spool


def _family_corpus(n: int, seed: int) -> list[str]:
    """Families of edited copies: chains (each copy edits the previous one, so A~B and B~C while A and C
    drift apart), copies of the original with 0-6 edits (0: only punctuation differs, so every band
    collides), and one family of 300 rows that all land in the same buckets."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)]
    texts = []
    while len(texts) < n:
        words = [rng.choice(vocab) for _ in range(rng.randint(20, 45))]
        chain = rng.random() < 0.5
        current = list(words)
        for _ in range(rng.randint(1, 8)):
            edited = list(current if chain else words)
            for _ in range(rng.choice((0, 1, 1, 2, 3, 6))):
                edited[rng.randrange(len(edited))] = rng.choice(vocab)
            current = edited
            texts.append(" ".join(edited) + rng.choice(("", ".", "!", " ...")))
    big = [rng.choice(vocab) for _ in range(40)]
    texts += [" ".join(big) + "!" * k for k in range(300)]
    texts += [" ".join(big[:-1] + [rng.choice(vocab)]) for _ in range(20)]
    rng.shuffle(texts)
    return texts


def _datasketch(texts: list[str], cfg: DedupConfig) -> tuple[MinHashLSH, list, list]:
    values = _signature_batch(texts, cfg)
    sigs = [LeanMinHash(seed=1, hashvalues=v, scheme="affine32") for v in values]
    sets = [shingles(t, cfg.shingle, cfg.word_ngram, cfg.char_ngram) for t in texts]
    return MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(0.1, 0.9)), sigs, sets


def _reference_owner(texts: list[str], cfg: DedupConfig) -> list[int]:
    """The algorithm before Arrow: insert kept rows into datasketch's index one by one, query each row."""
    index, sigs, sets = _datasketch(texts, cfg)
    owner = []
    for i, sig in enumerate(sigs):
        match = next((k for k in sorted(index.query(sig)) if jaccard(sets[i], sets[k]) >= cfg.threshold), -1)
        owner.append(match)
        if match < 0:
            index.insert(i, sig)
    return owner


def test_near_dedup_decides_exactly_as_datasketch_minhash_lsh():
    for threshold in (0.8, 0.6):
        cfg = DedupConfig(threshold=threshold)
        texts = _family_corpus(1500, seed=int(threshold * 10))
        owner = near_duplicate_of(keyed([{"text": t} for t in texts], cfg), cfg)
        expected = _reference_owner(texts, cfg)
        assert owner.tolist() == expected
        dropped = int((owner >= 0).sum())
        assert 300 < dropped < len(texts) - 300, dropped
        # the decision is in order against kept rows: some rows nearly copy a dropped row yet stay
        sets = [shingles(t) for t in texts]
        assert any(owner[i] < 0 and owner[j] >= 0 and jaccard(sets[i], sets[j]) >= threshold
                   for j in range(len(texts)) for i in range(j + 1, min(j + 40, len(texts))))


def test_near_leak_check_matches_datasketch_queries():
    cfg = DedupConfig()
    texts = _family_corpus(1200, seed=7)
    queries, targets = texts[:700], texts[700:]
    index, sigs, sets = _datasketch(targets, cfg)
    for k, sig in enumerate(sigs):
        index.insert(k, sig)
    _, query_sigs, query_sets = _datasketch(queries, cfg)
    expected = [any(jaccard(query_sets[q], sets[k]) >= cfg.threshold for k in index.query(sig))
                for q, sig in enumerate(query_sigs)]
    found = near_matches(keyed([{"text": t} for t in queries], cfg), keyed([{"text": t} for t in targets], cfg), cfg)
    assert found.tolist() == expected and 50 < sum(expected) < 650


class WordTokenizer:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_maps_in_worker_processes_give_the_same_arrays(tmp_path, monkeypatch):
    data = load_config(None, ["data.format=text", "data.filters.max_chars=200"]).data
    texts = _family_corpus(600, seed=3)
    rows = Rows(spool(({"id": str(i), "text": t} for i, t in enumerate(texts)), row_schema(data),
                      tmp_path / "rows.arrow"))
    rows = rows.select(np.arange(len(rows))[::-1])  # a view in another order
    alone = add_band_keys(measure(rows, data, WordTokenizer(), 1), data.dedup, 1)
    monkeypatch.setattr(store, "ROWS_PER_WORKER", 100)
    assert store.workers(len(rows), 2) == 2
    parallel = add_band_keys(measure(rows, data, WordTokenizer(), 2), data.dedup, 2)
    for name in ("rule", "key", "tokens", "bands"):
        assert np.array_equal(alone.arrays[name], parallel.arrays[name]), name
    assert (alone.arrays["rule"] >= 0).any() and alone.arrays["tokens"][0] == len(texts[-1].split())
