"""Exact and near-duplicate detection over `Rows`. The first row in input order (sources in config
order, rows in file order) is the copy kept, so the result never depends on hashing or scheduling.

Exact: a 64-bit hash of the normalised text per row (computed with the filters, one map), rows grouped
by sorting it, and the full normalised key compared inside each group, so a hash collision can never
drop a row.

Near: MinHash LSH with the banding datasketch's `MinHashLSH` picks for the threshold and `num_perm`.
The signature map stores one 64-bit key per band and row instead of datasketch's in-memory index
(which holds every signature as Python objects); candidates are rows sharing a band key, found by
sorting one band at a time. Each candidate is confirmed with the exact Jaccard similarity of the two
shingle sets, so a row is dropped only when it truly reaches the threshold (the MinHash estimate alone
is off by about 0.035 at 0.8 with 128 permutations). Rows are decided in order, exactly as inserting
them one by one into `MinHashLSH` would: a row goes when an earlier *kept* row sharing a band with it
confirms; tests check this against datasketch itself.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH

from domaintune.core.schema import DedupConfig
from domaintune.data.clean import normalized_key
from domaintune.data.report import EXAMPLES_PER_RULE, StepLog
from domaintune.data.store import Rows

_SEED = 1  # every signature must share the permutations to be comparable
_SCHEME = "affine32"  # datasketch 2 default; stated so stored hash values can be rebuilt
# Bands tuned for recall (false negatives weigh 0.9): every candidate is then confirmed with the exact
# Jaccard of its shingle sets, so the extra candidates cost time but never precision.
_WEIGHTS = (0.1, 0.9)
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


def _signature_batch(texts: list[str], cfg: DedupConfig) -> np.ndarray:
    """Hash values of each text's MinHash, one row per text.

    `bulk` reuses one set of permutations; xxhash (a datasets dependency) hashes shingles ~3x faster
    than datasketch's default SHA-1, and 32 bits are what the affine32 scheme consumes.
    """
    encoded = ([s.encode("utf-8") for s in shingles(t, cfg.shingle, cfg.word_ngram, cfg.char_ngram)] for t in texts)
    minhashes = MinHash.generator(encoded, num_perm=cfg.num_perm, seed=_SEED, scheme=_SCHEME,
                                  hashfunc=xxhash.xxh32_intdigest)
    return np.stack([m.hashvalues for m in minhashes]) if texts else np.zeros((0, cfg.num_perm), np.uint64)


def exact_key(text: str) -> int:
    """64-bit hash of the text folded as `clean.normalized_key` folds it (case, whitespace)."""
    return xxhash.xxh3_64_intdigest(" ".join(text.casefold().split()).encode("utf-8"))


@functools.lru_cache(maxsize=8)
def band_ranges(threshold: float, num_perm: int) -> list[tuple[int, int]]:
    """The (start, end) slices of the signature that datasketch's MinHashLSH uses as bands."""
    return MinHashLSH(threshold=threshold, num_perm=num_perm, weights=_WEIGHTS).hashranges


def band_keys_batch(texts: list[str], cfg: DedupConfig) -> dict[str, np.ndarray]:
    """Map function: per row, one key per LSH band (xxh3 of the band's hash values)."""
    values = _signature_batch(texts, cfg)
    keys = {}
    for k, (start, end) in enumerate(band_ranges(cfg.threshold, cfg.num_perm)):
        band = np.ascontiguousarray(values[:, start:end])
        keys[f"band{k}"] = np.fromiter((xxhash.xxh3_64_intdigest(row.tobytes()) for row in band), np.uint64, len(band))
    return keys


def add_band_keys(rows: Rows, cfg: DedupConfig, num_proc: int | None) -> Rows:
    """`rows` with `bands`, an (n, bands) array of band keys."""
    count = len(band_ranges(cfg.threshold, cfg.num_perm))
    if not len(rows):
        return rows.with_arrays(bands=np.zeros((0, count), np.uint64))
    table = rows.map(band_keys_batch, ["text"], num_proc, "MinHash bands", cfg=cfg)
    return rows.with_arrays(bands=np.stack([table.column(f"band{k}").to_numpy() for k in range(count)], axis=1))


def keyed(rows: list[dict], cfg: DedupConfig | None = None) -> Rows:
    """Rows held in memory with their exact keys (and band keys with `cfg`), as the pipeline's maps
    would give them: for tests, notebooks and the test-leak check of training on feedback."""
    view = Rows.from_list(rows)
    view = view.with_arrays(key=np.fromiter((exact_key(r["text"]) for r in rows), np.uint64, len(rows)))
    return add_band_keys(view, cfg, None) if cfg is not None else view


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by key (stable: equal keys stay in row order), and where each run of equal keys
    starts and how long it is."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(keys) else np.zeros(0, np.int64)
    return order, starts, np.diff(np.r_[starts, len(keys)])


def _repeats(keys: np.ndarray, value: Callable[[int], str]) -> np.ndarray:
    """True for each row whose `value` equals an earlier row's; `keys` (a hash of the value) limits
    the comparisons to rows that share a key."""
    order, starts, sizes = _groups(keys)
    repeat = np.zeros(len(keys), bool)
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
        seen: set[str] = set()
        for i in order[start:start + size]:
            v = value(i)
            repeat[i] = v in seen
            seen.add(v)
    return repeat


def drop_exact(rows: Rows, log: StepLog) -> Rows:
    repeat = _repeats(rows.arrays["key"], lambda i: normalized_key(rows.text(i)))
    for i in np.flatnonzero(repeat)[:EXAMPLES_PER_RULE]:
        log.example("exact_duplicate", {"text": rows.text(i)})
    kept = rows.select(~repeat)
    log.record("exact_dedup", len(rows), len(kept), {"exact_duplicate": int(repeat.sum())})
    return kept


class _Shingled:
    """Shingle sets computed on demand; with `last_use`, each set is forgotten after the last row that
    can ask for it, so memory follows the candidates alive at one time, not all of them."""

    def __init__(self, rows: Rows, cfg: DedupConfig, last_use: np.ndarray | None = None):
        self.rows, self.cfg, self.last_use = rows, cfg, last_use
        self.cache: dict[int, set[str]] = {}
        self.expiring: dict[int, list[int]] = {}

    def __getitem__(self, i: int) -> set[str]:
        if i not in self.cache:
            self.cache[i] = shingles(self.rows.text(i), self.cfg.shingle, self.cfg.word_ngram, self.cfg.char_ngram)
            if self.last_use is not None:
                self.expiring.setdefault(int(self.last_use[i]), []).append(i)
        return self.cache[i]

    def done_with(self, row: int) -> None:
        """`row` has been decided: forget the sets no later row needs."""
        for i in self.expiring.pop(row, ()):
            self.cache.pop(i, None)


def _shared_buckets(bands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, bucket) for every row in a bucket of 2+ rows; a bucket is one key in one band. Sorted by
    row, then bucket."""
    rows, buckets, next_id = [], [], 0
    for k in range(bands.shape[1]):
        order, starts, sizes = _groups(bands[:, k])
        shared = sizes > 1
        rows.append(order[np.repeat(shared, sizes)])
        buckets.append(np.repeat(np.arange(next_id, next_id + shared.sum()), sizes[shared]))
        next_id += int(shared.sum())
    rows_arr = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    buckets_arr = np.concatenate(buckets) if buckets else np.zeros(0, np.int64)
    by_row = np.lexsort((buckets_arr, rows_arr))
    return rows_arr[by_row], buckets_arr[by_row]


def near_duplicate_of(rows: Rows, cfg: DedupConfig) -> np.ndarray:
    """For each row, the index of the earlier kept row it nearly duplicates, or -1 if it is kept."""
    members, buckets = _shared_buckets(rows.arrays["bands"])
    owner = np.full(len(rows), -1, np.int64)
    if not len(members):
        return owner
    last_in_bucket = np.zeros(buckets.max() + 1, np.int64)
    np.maximum.at(last_in_bucket, buckets, members)
    last_use = np.zeros(len(rows), np.int64)
    np.maximum.at(last_use, members, last_in_bucket[buckets])
    sets = _Shingled(rows, cfg, last_use)
    kept_in: dict[int, list[int]] = {}  # bucket -> its kept rows, in order
    starts = np.flatnonzero(np.r_[True, members[1:] != members[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(members)], strict=True):
        i = int(members[start])
        mine = buckets[start:end].tolist()
        candidates = sorted({j for b in mine for j in kept_in.get(b, ())})
        match = next((j for j in candidates if jaccard(sets[i], sets[j]) >= cfg.threshold), -1)
        if match < 0:
            for b in mine:
                kept_in.setdefault(b, []).append(i)
        else:
            sets.cache.pop(i, None)  # a dropped row is never a candidate again
        owner[i] = match
        sets.done_with(i)
    return owner


def drop_near(rows: Rows, cfg: DedupConfig, log: StepLog) -> Rows:
    """Drop near duplicates; the kept rows keep their band keys (reused by the leakage check)."""
    owner = near_duplicate_of(rows, cfg)
    dropped = np.flatnonzero(owner >= 0)
    for i in dropped[:EXAMPLES_PER_RULE]:
        log.example("near_duplicate", {"text": f"{rows.text(i)}  ~  {rows.text(owner[i])}"})
    kept = rows.select(owner < 0)
    log.record("near_dedup", len(rows), len(kept), {"near_duplicate": len(dropped)})
    return kept


def _look_up(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`keys` sorted (as row order) and, per query key, the slice [lo, hi) of rows holding it."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    return order, np.searchsorted(ordered, queries, "left"), np.searchsorted(ordered, queries, "right")


def exact_matches(queries: Rows, targets: Rows) -> np.ndarray:
    """For each query row: does some target row have the same normalised text?"""
    order, lo, hi = _look_up(targets.arrays["key"], queries.arrays["key"])
    found = np.zeros(len(queries), bool)
    for q in np.flatnonzero(hi > lo):
        mine = normalized_key(queries.text(q))
        found[q] = any(normalized_key(targets.text(t)) == mine for t in order[lo[q]:hi[q]])
    return found


def near_matches(queries: Rows, targets: Rows, cfg: DedupConfig) -> np.ndarray:
    """For each query row: does a target row sharing a band with it reach the threshold? (leakage)"""
    found = np.zeros(len(queries), bool)
    if not len(targets) or not len(queries):
        return found
    looked_up = [_look_up(targets.arrays["bands"][:, k], queries.arrays["bands"][:, k])
                 for k in range(queries.arrays["bands"].shape[1])]
    hit = np.any([hi > lo for _, lo, hi in looked_up], axis=0)
    target_sets = _Shingled(targets, cfg)
    for q in np.flatnonzero(hit):
        candidates = {int(t) for order, lo, hi in looked_up for t in order[lo[q]:hi[q]]}
        mine = shingles(queries.text(q), cfg.shingle, cfg.word_ngram, cfg.char_ngram)
        found[q] = any(jaccard(mine, target_sets[t]) >= cfg.threshold for t in sorted(candidates))
    return found
