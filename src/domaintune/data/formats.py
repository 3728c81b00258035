"""Records -> the one internal row schema that the later steps and the train stage read.

Every row has `id`, `text` (what filters, dedup and causal-LM training see) and `label` (None unless
classification). `instruction` and `chat` rows also carry `messages`, a list of {role, content}
(instruction/input/output becomes one user turn and one assistant turn). Optional keys: `group`
(group-aware splits), `source` (for weights), `augmented` (true on augmented training rows).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import chain, islice

from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import DataConfig
from domaintune.data.clean import clean_text
from domaintune.data.hygiene import closest_label
from domaintune.data.readers import Table
from domaintune.data.report import BadRows

ROLES = ("system", "user", "assistant")


_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f]")


def looks_binary(value: str) -> bool:
    """NUL bytes, undecodable bytes (U+FFFD) or many control characters: not text."""
    if "\x00" in value or "\ufffd" in value:
        return True
    return _CONTROL.search(value) is not None and len(_CONTROL.findall(value)) > 0.1 * len(value)


def _check_columns(table: Table, head: list[tuple[str, dict]], data: DataConfig) -> None:
    """A column absent from every record is a config problem, not a bad row: stop with the columns seen
    in the first records (`head`)."""
    if table.plain_text or not head:
        if table.plain_text and data.format != "text":
            raise DomaintuneError(f"{table.origin}: plain-text input has no labels or turns; use data.format=text")
        return
    needed = {
        "classification": [("text_column", data.text_column), ("label_column", data.label_column)],
        "text": [("text_column", data.text_column)],
        "instruction": [("instruction_column", data.instruction_column), ("output_column", data.output_column)],
        "chat": [("messages_column", data.messages_column)],
    }[data.format]
    if data.group_column:
        needed.append(("group_column", data.group_column))
    seen: dict[str, None] = {}
    for _, fields in head:
        seen.update(dict.fromkeys(fields))
    for setting, column in needed:
        if column is None:
            raise DomaintuneError(f"data.{setting} must be set when data.format is {data.format}")
        if column not in seen:
            raise DomaintuneError(
                f"{table.origin}: no column '{column}' (columns: {', '.join(map(str, seen))}); set data.{setting}; "
                "see docs/troubleshooting.md#missing-column"
            )


def _messages(value, where_hint: str) -> list[dict]:
    if isinstance(value, str):
        value = json.loads(value)  # chat stored in a CSV cell as JSON text
    if not isinstance(value, list) or not value:
        raise ValueError("messages must be a non-empty list")
    out = []
    for turn in value:
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise ValueError(f"each message needs a role in {ROLES} and text content, got {str(turn)[:60]}")
        out.append({"role": turn["role"], "content": turn["content"]})
    if not any(turn["role"] == "assistant" for turn in out):
        raise ValueError("no assistant turn to learn from")
    return out


def rows_from_table(table: Table, data: DataConfig, bad: BadRows) -> list[dict]:
    """All rows of a (small) table at once; `iter_rows` streams them."""
    return list(iter_rows(table, data, bad))


def iter_rows(table: Table, data: DataConfig, bad: BadRows) -> Iterator[dict]:
    """Map, clean and validate every record of `table`, one at a time; malformed ones go to `bad`."""
    records = iter(table.records)
    head = list(islice(records, 1000))
    _check_columns(table, head, data)
    options = data.clean.model_dump()
    flat = {**options, "keep_newlines": False}
    keep = {**options, "keep_newlines": True}
    text_key = "text" if table.plain_text else data.text_column
    for where, fields in chain(head, records):
        table.count += 1
        raw_values = [v for v in fields.values() if isinstance(v, str)]
        if "__not_object__" in fields:
            bad.add(table.origin, where, "not a JSON object", _sample(fields))
            continue
        if any(looks_binary(v) for v in raw_values):
            bad.add(table.origin, where, "binary or undecodable bytes", _sample(fields))
            continue
        row = {"id": f"{table.origin}:{where}", "text": "", "label": None}
        try:
            if data.format in ("classification", "text"):
                value = fields.get(text_key)
                row["text"] = clean_text(
                    "" if value is None else str(value), **(flat if data.format == "classification" else keep)
                )
            elif data.format == "instruction":
                prompt = clean_text(str(fields.get(data.instruction_column) or ""), **keep)
                extra = clean_text(str(fields.get(data.input_column) or ""), **keep)
                answer = clean_text(str(fields.get(data.output_column) or ""), **keep)
                if not prompt or not answer:
                    raise ValueError("empty instruction or output")
                row["messages"] = [
                    {"role": "user", "content": f"{prompt}\n\n{extra}" if extra else prompt},
                    {"role": "assistant", "content": answer},
                ]
            else:
                turns = _messages(fields.get(data.messages_column), where)
                row["messages"] = [{**t, "content": clean_text(t["content"], **keep)} for t in turns]
            if "messages" in row:
                row["text"] = "\n\n".join(t["content"] for t in row["messages"] if t["content"])
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            bad.add(table.origin, where, f"malformed {data.format} row ({exc})", _sample(fields))
            continue
        if not row["text"]:
            bad.add(table.origin, where, "empty text", _sample(fields))
            continue
        if data.format == "classification":
            label = _label(fields.get(data.label_column), data)
            if label.startswith("!"):
                bad.add(table.origin, where, label[1:], _sample(fields))
                continue
            row["label"] = label
        if data.group_column:
            group = fields.get(data.group_column)
            if group is None or str(group).strip() == "":
                bad.add(table.origin, where, f"missing group ({data.group_column})", _sample(fields))
                continue
            row["group"] = str(group).strip()
        yield row


def _sample(fields: dict) -> str:
    """A malformed row's raw content for the data card (made only for rows that are listed)."""
    return json.dumps(fields, ensure_ascii=False, default=str)


def _label(raw, data: DataConfig) -> str:
    """The row's label, or a reason prefixed with `!` when it is missing or unknown."""
    label = clean_text("" if raw is None else str(raw))
    if not label:
        return "!missing label"
    if data.label_map is not None:
        if label not in data.label_map:
            return f"!unknown label '{label}' (not in data.label_map{_did_you_mean(label, data.label_map)})"
        label = data.label_map[label]
    if data.labels is not None and label not in data.labels:
        return f"!unknown label '{label}' (not in data.labels{_did_you_mean(label, data.labels)})"
    return label


def _did_you_mean(label: str, known) -> str:
    close = closest_label(label, known)
    return f"; did you mean '{close}'?" if close else ""
