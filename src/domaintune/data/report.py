"""What each step did, for the data card: malformed rows with their place, and rows removed per rule.

Nothing is dropped silently: every removal goes through `BadRows.add` or `StepLog.remove`.
"""

from __future__ import annotations

from collections import Counter

from domaintune.core.errors import DomaintuneError

LISTED_BAD_ROWS = 1000  # the card lists this many bad rows by place; the counts cover all of them
EXAMPLES_PER_RULE = 3
EXAMPLE_CHARS = 160


class BadRows:
    """Malformed input rows; with `strict` the first one stops the run with its file and line."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.rows: list[dict] = []
        self.by_reason: Counter[str] = Counter()

    def add(self, origin: str, where: str, reason: str, sample: str | None = None) -> None:
        """Count one malformed row; `sample` (its raw content, cut short) is listed with it."""
        if self.strict:
            raise DomaintuneError(
                f"{origin}: {where}: {reason} (data.strict is true; set it false to skip and count such rows)"
            )
        self.by_reason[reason.split(" (")[0]] += 1
        if len(self.rows) < LISTED_BAD_ROWS:
            entry = {"source": origin, "where": where, "reason": reason}
            if sample is not None:
                entry["sample"] = sample if len(sample) <= EXAMPLE_CHARS else sample[:EXAMPLE_CHARS] + "..."
            self.rows.append(entry)

    def summary(self) -> dict:
        return {"count": sum(self.by_reason.values()), "by_reason": dict(self.by_reason), "rows": self.rows}


def _example(row: dict) -> str:
    text = row.get("text", "")
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."


class StepLog:
    """Rows in and out of each pipeline step, removals per rule, and a few removed examples per rule."""

    def __init__(self):
        self.steps: list[dict] = []
        self.examples: dict[str, list[str]] = {}

    def record(
        self, step: str, rows_in: int, rows_out: int, removed: dict[str, int] | None = None,
        added: dict[str, int] | None = None,
    ) -> None:
        entry = {"step": step, "rows_in": rows_in, "rows_out": rows_out, "removed": removed or {}}
        if added:
            entry["added"] = added
        self.steps.append(entry)

    def example(self, rule: str, row: dict) -> None:
        shown = self.examples.setdefault(rule, [])
        if len(shown) < EXAMPLES_PER_RULE:
            shown.append(_example(row))
