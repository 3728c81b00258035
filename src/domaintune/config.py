"""The one config schema shared by the CLI and the Python API.

A config is a YAML file whose every key can be overridden with dotted `key=value` pairs
(`train.lora.r=16`). Unknown keys are rejected with a suggestion and wrong types name the key, so a typo
never silently falls back to a default. Every field is documented where it is declared; the README's
config reference is generated from these descriptions (`domaintune config --reference`).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import DomaintuneError
from .io import atomic_write_text


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = Field(
        "smollm2-135m",
        description="Base model: the alias `smollm2-135m` (embedded SmolLM2-135M-Instruct), a local "
        "HF-format folder, a local `.gguf` file, or a hub id (needs network).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")


class DataConfig(_Section):
    source: str = Field(
        "drugreviews",
        description="Training data: the named dataset `drugreviews` (embedded Drugs.com reviews) or a "
        "CSV/TSV/JSONL file path.",
    )
    test_source: str | None = Field(
        None,
        description="Optional test file kept as it is (only cleaned); if unset the test split is cut "
        "from `source` (the named dataset brings its own test file).",
    )
    format: Literal["classification", "text"] = Field(
        "classification", description="`classification`: text plus label; `text`: raw domain text only."
    )
    text_column: str = Field("review", description="Column holding the document text.")
    label_column: str | None = Field("rating", description="Column holding the label (classification).")
    labels: list[str] | None = Field(
        None, description="Label options in a fixed order; taken from the training data when unset."
    )
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of rows for validation.")
    test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of rows for test when no test file is given."
    )
    min_chars: int = Field(1, ge=1, description="Rows whose cleaned text is shorter are dropped.")
    output_dir: str = Field("prepared/drugreviews", description="Where `prepare` writes the splits.")


class PromptConfig(_Section):
    instruction: str = Field(
        "Classify the sentiment of this drug review as negative, neutral or positive. "
        "Answer with one word.",
        description="Instruction placed before the document in the user turn (sft and label scoring).",
    )
    system: str | None = Field(
        None, description="System message; unset keeps the chat template's own default."
    )


class LoraSettings(_Section):
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Modules to adapt: `all-linear` or a list of module names (q_proj, v_proj, ...).",
    )


class TrainConfig(_Section):
    method: Literal["lora", "full"] = Field(
        "lora", description="`lora`: train a PEFT adapter; `full`: update every weight."
    )
    task: Literal["sft", "causal-lm"] = Field(
        "sft",
        description="`sft`: chat-template prompt (instruction + document) and answer (label); "
        "`causal-lm`: raw document text.",
    )
    loss_on: Literal["answer", "all"] = Field(
        "answer", description="sft only: loss on the answer tokens (`answer`) or the whole sequence."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate; unset: 2e-4 for lora, 2e-5 for full."
    )
    batch_size: int = Field(8, ge=1, description="Sequences per device step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps per optimizer step.")
    max_length: int = Field(256, ge=8, description="Token budget per sequence; documents are cut to fit.")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="Share of steps for LR warm-up.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR schedule.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="`auto`: bf16 autocast where the hardware supports it, else fp32."
    )
    max_train_rows: int | None = Field(
        None, ge=1, description="Use at most this many training rows (quick runs)."
    )
    logging_steps: int = Field(5, ge=1, description="Log loss and throughput every N steps.")
    output_dir: str = Field("runs/lora", description="Run folder to write.")


class EvaluateConfig(_Section):
    max_examples: int | None = Field(None, ge=1, description="Evaluate at most this many test rows.")
    batch_size: int = Field(8, ge=1, description="Sequences per forward pass.")
    max_length: int = Field(256, ge=8, description="Token budget per evaluated sequence.")
    base_output_dir: str = Field(
        "runs/base", description="Where `evaluate` writes the base model's metrics."
    )
    general_text: str | None = Field(
        None,
        description="Forgetting check: a text file (one passage per line) scored for perplexity by every "
        "model; unset: the general English passages shipped with domaintune. Empty string: skip.",
    )
    samples: int = Field(3, ge=0, description="Test rows answered greedily and kept as generation samples.")
    sample_max_new_tokens: int = Field(24, ge=1, description="Token budget of each generation sample.")
    baseline_output_dir: str = Field(
        "runs/tfidf", description="Where `domaintune baseline` writes the TF-IDF + logistic regression metrics."
    )


class Config(_Section):
    seed: int = Field(42, description="Seed for splits, initialisation and data order.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; unset: all cores.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data and splits.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt rendering.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation.")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `["train.lora.r=16", "data.source=x.csv"]` into a nested dict; values are YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise DomaintuneError(f"override '{pair}' is not of the form key=value (e.g. train.lora.r=16)")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DomaintuneError(f"override '{pair}' conflicts with an earlier override of '{part}'")
        node[parts[-1]] = _scalar(raw)
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


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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
    raw = _merge(raw, parse_overrides(overrides or []))
    return validate_config(raw, where)


def validate_config(raw: dict[str, Any], where: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise DomaintuneError(f"{where}: {describe_validation_error(exc)}") from None


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    section: type[BaseModel] = Config
    for part in loc:
        field = section.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        section = annotation
    return section


def describe_validation_error(exc: ValidationError) -> str:
    """The first error as one line: unknown keys with a suggestion, type errors with the expected type."""
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        section = _section_at(loc[:-1])
        known = list(section.model_fields) if section else []
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5) or sorted(
            (k for k in known if loc[-1].startswith(k) or k.startswith(loc[-1])), key=len, reverse=True
        )[:1]
        hint = f" (did you mean '{'.'.join(loc[:-1] + (close[0],))}'?)" if close else ""
        if not close and known:
            hint = f" (known keys here: {', '.join(known)})"
        return f"unknown key '{key}'{hint}"
    section = _section_at(loc[:-1])
    field = section.model_fields.get(loc[-1]) if section else None
    expected = _type_name(field.annotation) if field else "a valid value"
    return f"key '{key}' expects {expected}, got {err.get('input')!r} ({err['msg']})"


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    return text.replace("<class '", "").replace("'>", "")


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
