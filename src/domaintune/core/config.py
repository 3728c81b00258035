"""Loading a config: a YAML file whose every key can be overridden with dotted `key=value` pairs
(`train.lora.r=16`), validated against the schema (schema.py), and written back beside every output.

Unknown keys are rejected with a suggestion and wrong types name the key, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from domaintune.core.dotted import deep_merge, set_dotted
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_text
from domaintune.core.schema import Config
from domaintune.core.validation import describe_validation_error


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `["train.lora.r=16", "data.source=x.csv"]` into a nested dict; values are YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise DomaintuneError(f"override '{pair}' is not of the form key=value (e.g. train.lora.r=16)")
        try:
            set_dotted(nested, key.strip(), _scalar(raw))
        except ValueError as exc:
            raise DomaintuneError(f"override '{pair}' conflicts with an earlier override: {exc}") from None
    return nested


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _scalar(raw: str) -> Any:
    """A YAML value; `1e-4` is a number too (YAML 1.1 reads it as a string without a dot)."""
    if not raw.strip():
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when `path` is None), apply dotted overrides, validate."""
    raw: dict[str, Any] = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise DomaintuneError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise DomaintuneError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(raw, dict):
            raise DomaintuneError(f"{path}: the top level must be a mapping of keys, not {type(raw).__name__}")
    raw = deep_merge(raw, parse_overrides(overrides or []))
    cfg = validate_config(raw, where)
    cfg._source_file = str(path) if path is not None else None
    return cfg


def validate_config(raw: dict[str, Any], where: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise DomaintuneError(f"{where}: {describe_validation_error(exc, Config)}") from None


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def save_config(cfg: Config, folder: str | Path) -> Path:
    """Write the resolved config next to what a stage produced, so the output explains itself."""
    path = Path(folder) / "config.yaml"
    atomic_write_text(path, config_to_yaml(cfg))
    return path


def config_reference(section: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Markdown rows `| key | default | description |` for every leaf field of the schema."""
    rows: list[str] = []
    for name, field in section.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(config_reference(annotation, key + "."))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append(f"| `{key}` | `{default!r}` | {field.description or ''} |")
    return rows
