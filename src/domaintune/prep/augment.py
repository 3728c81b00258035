"""Augmentation that needs no network: random word deletion and swap (EDA) on training rows only.

Augmented rows carry `"augmented": true` and an id ending in `#augN`; they are made after the split
and the leakage check, so they can never reach val or test.
"""

from __future__ import annotations

import random

from ..config import AugmentConfig
from ..errors import DomaintuneError


def delete_and_swap(text: str, probability: float, rng: random.Random) -> str:
    """Drop each word with `probability`, then swap about `probability` x words random pairs.

    Written here because the maintained EDA packages pull in WordNet downloads for their synonym step,
    which is neither wanted nor reachable offline.
    """
    words = text.split()
    if len(words) < 2:
        return text
    kept = [w for w in words if rng.random() >= probability] or [rng.choice(words)]
    for _ in range(max(1, round(probability * len(kept)))):
        i, j = rng.randrange(len(kept)), rng.randrange(len(kept))
        kept[i], kept[j] = kept[j], kept[i]
    return " ".join(kept)


def augment_rows(rows: list[dict], cfg: AugmentConfig, data_format: str, seed: int) -> list[dict]:
    """New rows only (the originals are not repeated); variants equal to their source are skipped."""
    if cfg.method == "none":
        return []
    if data_format not in ("classification", "text"):
        raise DomaintuneError(f"data.augment.method={cfg.method} works on classification and text data, "
                              f"not {data_format}")
    rng = random.Random(seed)
    out = []
    for row in rows:
        for k in range(1, cfg.copies + 1):
            text = delete_and_swap(row["text"], cfg.probability, rng)
            if text != row["text"]:
                out.append({**row, "id": f"{row['id']}#aug{k}", "text": text, "augmented": True})
    return out
