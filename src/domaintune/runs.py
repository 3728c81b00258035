"""Reading run folders back: their config, their card, and the model they hold."""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import Config, load_config
from .errors import DomaintuneError
from .io import read_json
from .methods import ADAPTER_METHODS
from .models import load_base, load_causal_lm, load_tokenizer, resolve_model, weights_fingerprint
from .seqcls import load_classifier, set_pad_token

BASE = "base"


def run_card(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "run_card.json"
    if not Path(run_dir).is_dir():
        raise DomaintuneError(f"run folder not found: {run_dir}")
    if not path.is_file():
        raise DomaintuneError(f"{run_dir}: not a complete run folder (run_card.json is missing); "
                              "see docs/troubleshooting.md#stage-order")
    return read_json(path)


def run_config(run_dir: str | Path) -> Config:
    run_card(run_dir)  # checks the folder first, so its error names what a run folder needs
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise DomaintuneError(f"{run_dir}: not a complete run folder (config.yaml is missing)")
    return load_config(path)


def is_adapter_run(card: dict) -> bool:
    return card["method"] in ADAPTER_METHODS


def weights_dir(run_dir: str | Path) -> Path:
    adapter = is_adapter_run(run_card(run_dir))
    folder = Path(run_dir) / ("adapter" if adapter else "model")
    marker = "adapter_config.json" if adapter else "config.json"
    if not (folder / marker).is_file():
        raise DomaintuneError(f"{run_dir}: {folder.name}/{marker} is missing; the run folder is incomplete")
    return folder


def load_run_model(target: str, cfg: Config) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`"base"` loads `cfg.model`; a run folder loads its adapter on its own base, or its full model."""
    if target == BASE:
        return load_base(cfg.model.name, cfg.model.revision)
    folder = weights_dir(target)
    card = run_card(target)
    tokenizer = load_tokenizer(str(folder))
    classifier = card["task"] == "classification"
    if not is_adapter_run(card):
        model = load_classifier(str(folder), card["labels"]) if classifier else load_causal_lm(str(folder))
        return model, tokenizer
    own = run_config(target)
    try:
        if classifier:
            base = load_classifier(resolve_model(own.model.name), card["labels"], own.model.revision)
            set_pad_token(base, tokenizer)
        else:
            base, _ = load_base(own.model.name, own.model.revision)
    except DomaintuneError as exc:
        raise DomaintuneError(f"{target}: the adapter's base model cannot be loaded: {exc}") from None
    check_base_weights(target, card, base, own.model.name)
    try:
        return PeftModel.from_pretrained(base, folder), tokenizer
    except (RuntimeError, ValueError) as exc:  # shape mismatches, target modules the base lacks
        reason = " ".join(str(exc).split())[:300]
        raise DomaintuneError(f"{target}: the adapter does not fit base model '{own.model.name}' ({reason}); "
                              "see docs/troubleshooting.md#adapter-mismatch") from None


def check_base_weights(target: str, card: dict, base: PreTrainedModel, name: str) -> None:
    """Refuse a base whose weights changed since training: PEFT would load the adapter onto any weights
    of the right shapes without a word, and the result is another model."""
    trained_on = card.get("base_weights_fingerprint")
    now = weights_fingerprint(base) if trained_on else None
    if now != trained_on:
        raise DomaintuneError(
            f"{target}: base model '{name}' now holds other weights than the run was trained on "
            f"(fingerprint {now}, trained on {trained_on}); the adapter would change a "
            "different model: restore that base (or pin model.revision) or train again; "
            "see docs/troubleshooting.md#adapter-mismatch"
        )
