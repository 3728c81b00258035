"""Exact and near-duplicate detection. The first row in input order (sources in config order, rows in
file order) is the copy kept, so the result never depends on hashing or process scheduling.

Near duplicates use datasketch's MinHash LSH; candidates from the index are confirmed with the MinHash
Jaccard estimate, so a row is only dropped when its estimated similarity reaches the threshold.
"""

from __future__ import annotations

import re

import numpy as np
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

from ..clean import normalized_key
from ..config import DedupConfig
from .report import StepLog

_SEED = 1  # every signature must share the permutations to be comparable
_SCHEME = "affine32"  # datasketch 2 default; stated so stored hash values can be rebuilt
_DENSE_SCRIPT = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")
_NON_WORD = re.compile(r"[^\w\s]")


def shingles(text: str, mode: str = "auto", word_n: int = 3, char_n: int = 4) -> set[str]:
    """Word n-grams for spaced languages; character n-grams for Hangul/CJK, where one word carries its
    particles (`약을`, `약이`) and word shingles would miss most near copies."""
    words = _NON_WORD.sub(" ", text.casefold()).split()
    if mode == "auto":
        mode = "word"
        if _DENSE_SCRIPT.search(text):  # cheap test first: most documents have no Hangul/CJK at all
            letters = sum(map(len, words))
            mode = "char" if len(_DENSE_SCRIPT.findall(text)) > 0.3 * max(letters, 1) else "word"
    if mode == "char":
        folded, n = " ".join(words), char_n
        return {folded[i:i + n] for i in range(max(len(folded) - n + 1, 1))}
    n = word_n
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}


def _signature_batch(texts: list[str], cfg: DedupConfig) -> list[np.ndarray]:
    # `bulk` reuses one set of permutations; xxhash (a datasets dependency) hashes shingles ~3x faster
    # than datasketch's default SHA-1, and 32 bits are what the affine32 scheme consumes.
    encoded = ([s.encode("utf-8") for s in shingles(t, cfg.shingle, cfg.word_ngram, cfg.char_ngram)] for t in texts)
    return [m.hashvalues for m in MinHash.generator(
        encoded, num_perm=cfg.num_perm, seed=_SEED, scheme=_SCHEME, hashfunc=xxhash.xxh32_intdigest
    )]


def signatures(texts: list[str], cfg: DedupConfig) -> list[LeanMinHash]:
    """MinHash signatures; with `num_proc > 1` the hashing runs in HF datasets' `map` worker processes."""
    if cfg.num_proc > 1 and len(texts) >= 2000:
        from datasets import Dataset, disable_progress_bars

        disable_progress_bars()
        mapped = Dataset.from_dict({"text": texts}).map(
            lambda batch: {"sig": _signature_batch(batch["text"], cfg)},
            batched=True, batch_size=1000, num_proc=cfg.num_proc, remove_columns=["text"],
        ).with_format("numpy")
        values = mapped["sig"]
    else:
        values = _signature_batch(texts, cfg)
    return [LeanMinHash(seed=_SEED, hashvalues=v, scheme=_SCHEME) for v in values]


def drop_exact(rows: list[dict], log: StepLog) -> list[dict]:
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = normalized_key(row["text"])
        if key in seen:
            log.example("exact_duplicate", row)
            continue
        seen.add(key)
        kept.append(row)
    log.record("exact_dedup", len(rows), len(kept), {"exact_duplicate": len(rows) - len(kept)})
    return kept


def _lsh(cfg: DedupConfig) -> MinHashLSH:
    return MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)


def near_duplicate_of(sigs: list[LeanMinHash], cfg: DedupConfig) -> list[int | None]:
    """For each row, the index of an earlier kept row it nearly duplicates, or None if it is kept."""
    index = _lsh(cfg)
    owner: list[int | None] = []
    for i, sig in enumerate(sigs):
        match = None
        for key in index.query(sig):
            if sig.jaccard(sigs[key]) >= cfg.threshold and (match is None or key < match):
                match = key
        owner.append(match)
        if match is None:
            index.insert(i, sig)
    return owner


def drop_near(rows: list[dict], sigs: list[LeanMinHash], cfg: DedupConfig, log: StepLog) -> tuple[list[dict], list]:
    """Drop near duplicates; returns kept rows and their signatures (reused by the leakage check)."""
    owner = near_duplicate_of(sigs, cfg)
    kept, kept_sigs = [], []
    for row, sig, match in zip(rows, sigs, owner, strict=True):
        if match is None:
            kept.append(row)
            kept_sigs.append(sig)
        else:
            log.example("near_duplicate", {"text": f"{row['text']}  ~  {rows[match]['text']}"})
    log.record("near_dedup", len(rows), len(kept), {"near_duplicate": len(rows) - len(kept)})
    return kept, kept_sigs


def near_matches(queries: list[LeanMinHash], targets: list[LeanMinHash], cfg: DedupConfig) -> list[bool]:
    """For each query signature: does any target reach the threshold? (leakage between splits)"""
    if not targets:
        return [False] * len(queries)
    index = _lsh(cfg)
    for i, sig in enumerate(targets):
        index.insert(i, sig)
    return [any(q.jaccard(targets[k]) >= cfg.threshold for k in index.query(q)) for q in queries]
