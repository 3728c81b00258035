"""An augmented copy of a row, and when two texts count as one: shared by EDA (augment.py) and paraphrase.py."""

from __future__ import annotations

from domaintune.data.clean import normalized_key


def variant(row: dict, k: int, text: str) -> dict:
    return {**row, "id": f"{row['id']}#aug{k}", "text": text, "augmented": True}


def same_text(a: str, b: str) -> bool:
    """Equal as the exact-duplicate check sees them (case and whitespace ignored)."""
    return normalized_key(a) == normalized_key(b)
