"""Signs in the rows read that the source needs fixing, for the data card: labels that look like typos of
another label, and personal data that `data.clean` was not asked to mask. Nothing here drops a row; the
card and prepare's summary say what was found and which setting deals with it.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from domaintune.core.data_card import LabelNearMiss, UnmaskedPii
from domaintune.core.schema import DataConfig
from domaintune.data.clean import PII_KINDS
from domaintune.data.store import Rows

# A label is taken for a typo of another label only when it is both rare beside it and close to it:
# - rare: at most 1% of the other label's rows, and never more than that share, so a real minority class
#   (a few percent of the data) is not called a typo; a single row counts as rare beside a label of
#   MIN_FREQUENT rows or more, so that small files (a few hundred rows) are checked too.
# - close: the same name but for case ('Positive' beside 'positive'), or a difflib similarity ratio of
#   at least 0.8 between the case-folded names: one character wrong, missing or extra in a name of five
#   letters or more ('positve' 0.93, 'neutal' 0.92), while names sharing only a stem or short codes
#   ('positive'/'very positive' 0.76, 'pos'/'neg', '1'/'2') stay apart.
RARE_SHARE = 0.01
MIN_FREQUENT = 20
CLOSE_RATIO = 0.8


def closeness(label: str, other: str) -> float:
    """1.0 for a case-only difference, else difflib's ratio of the case-folded names."""
    a, b = label.casefold(), other.casefold()
    return 1.0 if a == b else difflib.SequenceMatcher(None, a, b).ratio()


def closest_label(label: str, known: Iterable[str]) -> str | None:
    """The known label `label` most likely misspells (close enough by `closeness`), or None."""
    scored = [(closeness(label, other), other) for other in known if other != label]
    best = max(scored, default=(0.0, None))
    return best[1] if best[0] >= CLOSE_RATIO else None


def near_miss_labels(counts: Mapping[str, int], declared: Iterable[str] | None = None) -> list[LabelNearMiss]:
    """Rare labels close to a frequent one, with the suggested label; labels the config declares
    (`data.labels`) are taken as meant and never flagged."""
    meant = set(declared or ())
    found = []
    for label, rows in counts.items():
        if label in meant:
            continue
        frequent = [other for other, n in counts.items()
                    if other != label and n >= MIN_FREQUENT and rows <= max(1, RARE_SHARE * n)]
        suggestion = closest_label(label, frequent)
        if suggestion is not None:
            found.append(LabelNearMiss(label=label, rows=rows, suggestion=suggestion,
                                       suggestion_rows=counts[suggestion]))
    return sorted(found, key=lambda miss: (-miss.suggestion_rows, miss.label))


def label_counts(*parts: Rows) -> Counter[str]:
    """Rows per label over `parts` (the rows read: the pool and a test file)."""
    counts: Counter[str] = Counter()
    for rows in parts:
        if len(rows):
            codes, names = rows.codes("label")
            for code, n in zip(*np.unique(codes, return_counts=True), strict=True):
                counts[names[code]] += int(n)
    return counts


def unmasked_kinds(data: DataConfig) -> list[str]:
    """The kinds of personal data `data.clean` leaves in the text (those `filters.measure` looks for)."""
    options = data.clean.model_dump()
    return [kind for kind, (_, setting) in PII_KINDS.items() if not options[setting]]


def unmasked_pii(parts: Iterable[Rows], data: DataConfig) -> UnmaskedPii:
    """Rows holding each unmasked kind, from the `pii` bits `filters.measure` set (bit i: kind i of
    `unmasked_kinds`), and the settings that would mask the kinds found."""
    kinds = unmasked_kinds(data)
    flags = np.concatenate([rows.arrays["pii"] for rows in parts]) if kinds else np.zeros(0, np.int8)
    by_kind = {kind: int(np.count_nonzero(flags & (1 << i))) for i, kind in enumerate(kinds)}
    return UnmaskedPii(rows=int(np.count_nonzero(flags)), by_kind=by_kind,
                       mask_keys=[f"data.clean.{PII_KINDS[kind][1]}" for kind, n in by_kind.items() if n])


def label_warning(misses: list[LabelNearMiss] | None) -> str | None:
    if not misses:
        return None
    listed = ", ".join(f"'{m.label}' ({_rows(m.rows)}; did you mean '{m.suggestion}', {_rows(m.suggestion_rows)}?)"
                       for m in misses)
    return (f"labels that look like typos: {listed}; fix them in the source, map them with data.label_map, or "
            "list the real labels in data.labels; see docs/troubleshooting.md#label-typos")


def pii_warning(pii: UnmaskedPii | None) -> str | None:
    if pii is None or not pii.rows:
        return None
    found = ", ".join(f"{kind} {n}" for kind, n in pii.by_kind.items() if n)
    keys = ", ".join(f"{key}=true" for key in pii.mask_keys)
    return (f"{_rows(pii.rows)} hold personal data that is not masked ({found}); set {keys} to mask it; "
            "see docs/troubleshooting.md#personal-data")


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"
