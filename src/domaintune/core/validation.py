"""Pydantic's validation errors as one line naming the key: unknown keys with a suggestion, wrong types
with the expected type. Shared by the config schema and the typed settings of flags."""

from __future__ import annotations

import difflib
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError


def _section_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    section: type[BaseModel] = root
    parts = iter(loc)
    for part in parts:
        field = section.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if get_origin(annotation) is dict:  # `sweep.space`: the next part is a dict key, not a field
            annotation = get_args(annotation)[1]
            next(parts, None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        section = annotation
    return section


def describe_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """The first error as one line: unknown keys with a suggestion, type errors with the expected type."""
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    if err["type"] == "value_error":
        message = str(err["ctx"]["error"])  # a validator's own message names its keys
        return f"sweep.space: '{loc[2]}': {message}" if loc[:2] == ("sweep", "space") and len(loc) > 2 else message
    if err["type"] == "extra_forbidden":
        section = _section_at(loc[:-1], root)
        known = list(section.model_fields) if section else []
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5) or sorted(
            (k for k in known if loc[-1].startswith(k) or k.startswith(loc[-1])), key=len, reverse=True
        )[:1]
        hint = f" (did you mean '{'.'.join(loc[:-1] + (close[0],))}'?)" if close else ""
        if not close and known:
            hint = f" (known keys here: {', '.join(known)})"
        return f"unknown key '{key}'{hint}"
    section = _section_at(loc[:-1], root)
    field = section.model_fields.get(loc[-1]) if section else None
    expected = _type_name(field.annotation) if field else "a valid value"
    return f"key '{key}' expects {expected}, got {err.get('input')!r} ({err['msg']})"


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    return text.replace("<class '", "").replace("'>", "")
