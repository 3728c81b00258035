"""Dotted keys (`train.lora.r`) on nested mappings: the one setter behind config overrides and sweep trials."""

from __future__ import annotations

from typing import Any


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`raw` (changed in place) with `key` set; a mapping set at a section key is merged into that section.

    Raises ValueError naming the part of the key that already holds a value rather than a section.
    """
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"'{part}' already holds a value, not a section")
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = deep_merge(node[last], value)
    else:
        node[last] = value
    return raw


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A new mapping: `base` with `update` laid over it, section by section."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
