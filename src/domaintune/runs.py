"""Reading run folders back: their config, their card, and the model they hold."""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import Config, load_config
from .errors import DomaintuneError
from .io import read_json
from .methods import ADAPTER_METHODS
from .models import load_base, load_causal_lm, load_tokenizer, resolve_model
from .seqcls import load_classifier, set_pad_token

BASE = "base"


def run_card(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "run_card.json"
    if not Path(run_dir).is_dir():
        raise DomaintuneError(f"run folder not found: {run_dir}")
    if not path.is_file():
        raise DomaintuneError(f"{run_dir}: not a complete run folder (run_card.json is missing)")
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
    if card.get("base_model") not in (None, own.model.name):
        raise DomaintuneError(f"{target}: run_card.json says the adapter was trained from '{card['base_model']}' "
                              f"but config.yaml names '{own.model.name}'; the folder mixes two runs")
    try:
        if classifier:
            base = load_classifier(resolve_model(own.model.name), card["labels"], own.model.revision)
            set_pad_token(base, tokenizer)
        else:
            base, _ = load_base(own.model.name, own.model.revision)
    except DomaintuneError as exc:
        raise DomaintuneError(f"{target}: the adapter's base model cannot be loaded: {exc}") from None
    try:
        return PeftModel.from_pretrained(base, folder), tokenizer
    except RuntimeError as exc:
        if "size mismatch" not in str(exc):
            raise
        first = next(line.strip() for line in str(exc).splitlines() if "size mismatch" in line)
        raise DomaintuneError(f"{target}: adapter/ does not fit base model '{own.model.name}', it was trained "
                              f"from another base ({first})") from None
