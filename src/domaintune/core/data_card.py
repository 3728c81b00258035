"""The data card (`data_card.json` of a prepared-data folder): where the rows came from, what each step removed,
leakage between the splits, labels and token lengths. Written by data/prepare.py, read here only, by
`read_data_card` (train, evaluate, baseline and compare check their data against it).

A new field is one line in `DataCard` (or in the part it belongs to), required if prepare always writes it,
`X | None = None` if not every card has it; then set it in data/prepare.py's `_build_card`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from domaintune.core.card_io import CardModel, read_card, write_card
from domaintune.core.errors import DomaintuneError

FILE = "data_card.json"
_REMEDY = "run `domaintune prepare` again to write it"


class CardSource(CardModel):
    sha256: str
    encoding: str | None
    records: int
    weight: float
    role: Literal["pool", "test"]


class BadRowEntry(CardModel):
    source: str
    where: str = Field(description="The place in the source: `line 12`, `item 3`, ...")
    reason: str
    sample: str | None = Field(None, description="The row's raw content, cut short.")


class BadRowCounts(CardModel):
    count: int
    by_reason: dict[str, int]
    rows: list[BadRowEntry] = Field(description="The first malformed rows by place (the counts cover all).")


class StepCounts(CardModel):
    step: str
    rows_in: int
    rows_out: int
    removed: dict[str, int] = Field(description="Rows removed per rule.")
    added: dict[str, int] | None = None


class DedupCounts(CardModel):
    exact: int
    near: int
    threshold: float
    shingle: str


class LeakCounts(CardModel):
    exact: dict[str, int] = Field(description="Per split: rows that repeat a later split's row exactly.")
    near: dict[str, int]
    removed: bool = Field(description="Whether they were removed (data.remove_leaks) or only counted.")


class AugmentationSummary(CardModel):
    method: str
    added: int
    rejected: dict[str, int] = Field(description="Variants dropped, per reason.")


class GarbledRows(CardModel):
    rows: int
    examples: list[str]


class TokenStats(CardModel):
    min: int
    p50: int
    p95: int
    max: int
    mean: float


class TokenLengths(CardModel):
    """The token statistics per split, or (`error`) why the tokenizer could not measure them."""

    error: str | None = None
    tokenizer: str | None = None
    splits: dict[str, TokenStats] | None = None
    histogram: str | None = None


class LabelNearMiss(CardModel):
    """A rare label that looks like a typo of a frequent one (data/hygiene.py says when)."""

    label: str
    rows: int
    suggestion: str
    suggestion_rows: int


class UnmaskedPii(CardModel):
    """Rows read that hold personal data which `data.clean` was not set to mask."""

    rows: int = Field(description="Rows holding any of the kinds below.")
    by_kind: dict[str, int] = Field(description="Rows per kind (email, url, phone) whose masking is off.")
    mask_keys: list[str] = Field(description="The config keys that would mask the kinds found.")


class DataCard(CardModel):
    format: Literal["classification", "text", "instruction", "chat"]
    sources: dict[str, CardSource]
    config_fingerprint: str
    fingerprint: str = Field(description="Inputs + config: what the train and evaluate stages check.")
    bad_rows: BadRowCounts
    steps: list[StepCounts]
    removed_examples: dict[str, list[str]]
    dedup: DedupCounts
    leakage: LeakCounts
    leaked_rows_removed: dict[str, int]
    rows: dict[str, int]
    augmented_rows: int
    augmentation: AugmentationSummary | None
    labels: list[str] | None
    label_distribution: dict[str, dict[str, int]] | None
    garbled_rows: GarbledRows
    token_lengths: TokenLengths
    # Counted since the label and privacy checks came; None in older cards.
    label_near_misses: list[LabelNearMiss] | None = None  # classification data only
    unmasked_pii: UnmaskedPii | None = None


def write_data_card(folder: Path, card: DataCard) -> Path:
    return write_card(Path(folder) / FILE, card)


def read_data_card(prepared_dir: str | Path) -> DataCard:
    path = Path(prepared_dir) / FILE
    if not path.is_file():
        raise DomaintuneError(f"{path} not found: run `domaintune prepare` first; "
                              "see docs/troubleshooting.md#stage-order")
    return read_card(path, DataCard, _REMEDY)
