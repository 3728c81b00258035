"""Where the review page's prompts come from: the served runs' `review` split, else their val split.

Never the test split: votes become training data (`feedback export`, DPO), and a test document trained
on that way would flatter the next evaluation, the leak that prepare removes between its splits.
"""

from __future__ import annotations

import random
from pathlib import Path

from domaintune.core.errors import DomaintuneError
from domaintune.data.prepare import read_split
from domaintune.data.splits import REVIEW
from domaintune.modeling.render import truncate_tokens
from domaintune.serving.pool import ModelPool, ServedModel

TEMPLATE_ALLOWANCE = 32  # tokens for the chat template and a system message around the user turn


class ReviewPrompts:
    """The review (or val) split of the first served model that has one with rows, read once."""

    def __init__(self, pool: ModelPool, max_prompt_tokens: int):
        self.pool, self.max_prompt_tokens = pool, max_prompt_tokens
        self.split: str | None = None  # "review" or "val" once read
        self._rows: list[dict] = []
        self._served: ServedModel | None = None
        self._read = False

    def count(self) -> int:
        self._load()
        return len(self._rows)

    def draw(self, rng: random.Random, exclude: set[str]) -> tuple[str, str] | None:
        """(row id, user turn) of a row not in `exclude`, or None when every row is excluded."""
        self._load()
        left = [row for row in self._rows if str(row["id"]) not in exclude]
        if not left:
            return None
        row = rng.choice(left)
        instruction = self._served.prompt.instruction
        tokenizer = self._served.tokenizer
        budget = self.max_prompt_tokens - len(tokenizer(instruction)["input_ids"]) - TEMPLATE_ALLOWANCE
        # The same user turn as training and evaluation build (render._messages).
        return str(row["id"]), f"{instruction}\n\n{truncate_tokens(tokenizer, row['text'], max(budget, 1))}"

    def _load(self) -> None:
        if self._read:
            return
        self._read = True
        for served in self.pool.models.values():
            split = REVIEW if (Path(served.prepared_dir) / f"{REVIEW}.jsonl").is_file() else "val"
            try:
                rows = read_split(served.prepared_dir, split)
            except DomaintuneError:
                continue
            if rows:
                self._rows, self._served, self.split = rows, served, split
                return
