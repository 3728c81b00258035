"""Each example's score, kept in the folder that was evaluated (`predictions.jsonl`), so every figure can
carry its uncertainty and two models can be compared on the same examples (uncertainty.py).

One JSON object per line:

    {"set": "test", "id": "r17", "gold": "positive", "predicted": "negative",
     "label_scores": {"negative": -0.4, "neutral": -2.1, "positive": -1.3}, "nll": 183.2, "tokens": 61}

- `set`: "test" for the test split, "general" for the forgetting passages (perplexity only).
- `gold`, `predicted`, `label_scores`: label tasks only. `label_scores` are the per-label
  log-probabilities of the answer (a causal LM), the head's logits (a classification head) or the
  baseline's log-probabilities; null where a model gives none.
- `nll`, `tokens`: perplexity only: the summed negative log-likelihood (nats) of the document's scored
  tokens and how many were scored. The document, not the token, is the unit a bootstrap resamples,
  because tokens of one document are not independent.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_text

PREDICTIONS_FILE = "predictions.jsonl"
SETS = ("test", "general")


@dataclass
class Prediction:
    set: str
    id: str
    gold: str | None = None
    predicted: str | None = None
    label_scores: dict[str, float] | None = None
    nll: float | None = None
    tokens: int | None = None


def write_predictions(folder: str | Path, rows: list[Prediction]) -> Path:
    path = Path(folder) / PREDICTIONS_FILE
    lines = (json.dumps(asdict(row), ensure_ascii=False) for row in rows)
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_predictions(folder: str | Path, which: str = "test") -> list[Prediction]:
    """The rows of one set; a folder evaluated before predictions were kept is a one-line error."""
    path = Path(folder) / PREDICTIONS_FILE
    if not path.is_file():
        raise DomaintuneError(f"{path} is missing: evaluate {folder} again to keep each example's score")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = Prediction(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DomaintuneError(f"{path}: line {number} is not a prediction ({exc}); evaluate again") from None
        if row.set not in SETS:
            raise DomaintuneError(f"{path}: line {number} has set {row.set!r}, expected one of {SETS}")
        if row.set == which:
            rows.append(row)
    return rows


def paired(first: list[Prediction], second: list[Prediction], first_name: str, second_name: str
           ) -> tuple[list[Prediction], list[Prediction]]:
    """The two lists in one id order, for paired tests; different example sets are a one-line error, since
    a paired test on different examples would compare the examples, not the models."""
    by_id = {row.id: row for row in second}
    if len(by_id) != len(second) or {row.id for row in first} != set(by_id):
        only_first = len({row.id for row in first} - set(by_id))
        only_second = len(set(by_id) - {row.id for row in first})
        raise DomaintuneError(
            f"{first_name} and {second_name} were evaluated on different examples ({only_first} only in the first, "
            f"{only_second} only in the second): evaluate both on the same prepared data and evaluate.max_examples"
        )
    return first, [by_id[row.id] for row in first]
