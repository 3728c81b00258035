"""Reading run folders back: their config, their card, and the model they hold."""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.core.config import load_config
from domaintune.core.errors import DomaintuneError
from domaintune.core.run_card import RunCardBase, read_run_card, read_training_run_card
from domaintune.core.schema import Config
from domaintune.modeling.methods import saved_as
from domaintune.modeling.models import load_base, load_causal_lm, load_tokenizer, resolve_model, weights_fingerprint
from domaintune.modeling.seqcls import load_classifier, set_pad_token

BASE = "base"


def run_config(run_dir: str | Path) -> Config:
    read_run_card(run_dir)  # checks the folder first, so its error names what a run folder needs
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise DomaintuneError(f"{run_dir}: not a complete run folder (config.yaml is missing)")
    return load_config(path)


def is_adapter_run(card: RunCardBase) -> bool:
    return saved_as(card.method) == "adapter"


def weights_dir(run_dir: str | Path) -> Path:
    adapter = is_adapter_run(read_run_card(run_dir))
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
    card = read_training_run_card(target)
    tokenizer = load_tokenizer(str(folder))
    classifier = card.task == "classification"
    if not is_adapter_run(card):
        model = load_classifier(str(folder), card.labels) if classifier else load_causal_lm(str(folder))
        return model, tokenizer
    own = run_config(target)
    if card.base_model != own.model.name:
        raise DomaintuneError(f"{target}: run_card.json says the adapter was trained from '{card.base_model}' "
                              f"but config.yaml names '{own.model.name}'; the folder mixes two runs")
    try:
        if classifier:
            base = load_classifier(resolve_model(own.model.name), card.labels, own.model.revision)
            set_pad_token(base, tokenizer)
        else:
            base, _ = load_base(own.model.name, own.model.revision)
    except DomaintuneError as exc:
        raise DomaintuneError(f"{target}: the adapter's base model cannot be loaded: {exc}") from None
    fingerprint = weights_fingerprint(base) if card.base_weights_fingerprint else None  # before PEFT renames
    try:
        model = PeftModel.from_pretrained(base, folder)
    except (RuntimeError, ValueError) as exc:  # shape mismatches, target modules the base lacks
        lines = str(exc).splitlines()
        reason = next((line.strip() for line in lines if "size mismatch" in line), " ".join(str(exc).split())[:300])
        raise DomaintuneError(f"{target}: adapter/ does not fit base model '{own.model.name}', it was trained "
                              f"from another base ({reason}); see docs/troubleshooting.md#adapter-mismatch") from None
    check_base_weights(target, card.base_weights_fingerprint, fingerprint, own.model.name)
    return model, tokenizer


def check_base_weights(target: str, trained_on: str | None, now: str | None, name: str) -> None:
    """Refuse a base whose weights changed since training: PEFT would load the adapter onto any weights
    of the right shapes without a word, and the result is another model."""
    if now != trained_on:
        raise DomaintuneError(
            f"{target}: base model '{name}' now holds other weights than the run was trained on "
            f"(fingerprint {now}, trained on {trained_on}); the adapter would change a "
            "different model: restore that base (or pin model.revision) or train again; "
            "see docs/troubleshooting.md#adapter-mismatch"
        )
