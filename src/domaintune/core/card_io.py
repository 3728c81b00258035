"""Reading and writing a typed JSON artifact (the run card, the data card): the one place a card file on disk
becomes a model, so that every problem with one reads as one line naming the file, the field and the fix.

A card's fields are declared in its own module (core/run_card.py, core/data_card.py). A field every version
writes is required, so a card missing it is refused rather than read with a silent gap; a field only some
folders have is `X | None = None` and is left out of the file when None (a DPO run's pairs are not written
as nulls into a LoRA run's card).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError, model_serializer

from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json
from domaintune.core.strict import StrictModel


class CardModel(StrictModel):
    """A card or a part of one: unknown fields are refused, and optional fields left unset are not written."""

    @model_serializer(mode="wrap")
    def _omit_unset_optionals(self, handler) -> dict[str, Any]:
        data = handler(self)
        for name, field in type(self).model_fields.items():
            if not field.is_required() and name in data and data[name] is None:
                del data[name]
        return data


Card = TypeVar("Card", bound=CardModel)


def write_card(path: Path, card: CardModel) -> Path:
    return atomic_write_json(path, card.model_dump(mode="json"))


def read_card(path: Path, kind: type[Card], remedy: str) -> Card:
    """`path` read as a `kind`; anything that does not fit is a DomaintuneError ending with `remedy`."""
    return card_from_dict(read_json_object(path, remedy), kind, str(path), remedy)


def read_json_object(path: Path, remedy: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DomaintuneError(f"{path}: not valid JSON ({exc}); {remedy}") from None
    if not isinstance(data, dict):
        raise DomaintuneError(f"{path}: not a JSON object; {remedy}")
    return data


def card_from_dict(data: dict[str, Any], kind: type[Card], where: str, remedy: str) -> Card:
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise DomaintuneError(f"{where}: {describe_card_error(exc)}; {remedy}") from None


def describe_card_error(exc: ValidationError) -> str:
    """The first problem of a card as a phrase naming its field (dotted, as in the JSON)."""
    err = exc.errors()[0]
    field = ".".join(str(part) for part in err["loc"])
    if err["type"] == "missing":
        return f"missing field '{field}' (written by an older domaintune?)"
    if err["type"] == "extra_forbidden":
        return f"unknown field '{field}' (written by another domaintune version?)"
    return f"field '{field}' holds {err.get('input')!r}: {err['msg']}"
