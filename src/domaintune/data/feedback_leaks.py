"""Keep test rows out of training on reviewers' votes.

A preference row's prompt is the user turn the review page showed: the run's instruction, a blank line
and a prepared document, or whatever the reviewer typed, which may be a pasted test document. Training
on it would flatter the next evaluation, the leak prepare removes between its own splits. So a row is
refused when its prompt came from the test split (`source_split`, written by `feedback export`), or when
its document repeats a row of the prepared test split exactly or nearly, found by prepare's own leakage
check (`prep.splits.leaks_into`) with the data config's dedup settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import DedupConfig
from domaintune.data.dedup import keyed
from domaintune.data.prepare import read_split
from domaintune.data.splits import leaks_into


def document_of(prompt: str, instruction: str) -> str:
    """The document in a drawn prompt (after the run's instruction), or a typed prompt as it is."""
    head = f"{instruction}\n\n"
    return prompt[len(head):] if instruction and prompt.startswith(head) else prompt


def drop_test_leaks(rows: list[dict], prepared_dir: str | Path, instruction: str,
                    dedup: DedupConfig) -> tuple[list[dict], dict[str, int]]:
    """The rows whose prompt is not a test row, and how many were dropped: drawn from the test split
    (`test_split`), or repeating a test row's text exactly (`exact`) or, with `dedup.near`, nearly."""
    try:
        test = read_split(prepared_dir, "test")
    except DomaintuneError as exc:
        raise DomaintuneError(f"the test-leak check of training on feedback reads the test split: {exc}") from None
    from_test = np.array([row.get("source_split") == "test" for row in rows], bool)
    exact = near = np.zeros(len(rows), bool)
    if test and rows:
        near_cfg = dedup if dedup.near else None
        queries = keyed([{"text": document_of(row["prompt"], instruction)} for row in rows], near_cfg)
        exact, near = leaks_into(queries, [keyed([{"text": row["text"]} for row in test], near_cfg)], near_cfg)
        exact, near = exact & ~from_test, near & ~from_test
    kept = [row for row, leaked in zip(rows, from_test | exact | near, strict=True) if not leaked]
    return kept, {"test_split": int(from_test.sum()), "exact": int(exact.sum()), "near": int(near.sum())}
