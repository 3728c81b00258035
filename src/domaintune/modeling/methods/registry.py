"""The registry of training methods: everything that differs between two values of `train.method`.

A method is one `Method` entry, registered by the module of its family (`lora.py`, `full.py`, `dpo.py`),
modelled on peft's `register_peft_method`. Training, comparing, exporting and serving ask the registry
(`get(name).saves`, `.wrap`, ...) instead of branching on the name.

Adding a method: its name and one-line description in `core/method_names.py` (the config is validated in
core, which may not import this layer, and without torch), and its `register(Method(...))` call in a
module of this package that `__init__.py` imports. `register` refuses a name core does not declare.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from domaintune.core.errors import DomaintuneError
from domaintune.core.method_names import METHOD_DESCRIPTIONS, METHOD_NAMES

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from domaintune.core.config import TrainConfig


def save_as_is(model: PreTrainedModel, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)


@dataclass(frozen=True)
class Method:
    name: str
    default_learning_rate: float
    saves: Literal["adapter", "model"]  # the run folder's adapter/ (PEFT) or model/ (whole HF model)
    wrap: Callable[[PreTrainedModel, TrainConfig], PreTrainedModel]  # what training updates, and how
    # Set where a CPU cannot run it: why, and what to use instead (the error's text after "needs a CUDA GPU").
    needs_cuda: str | None = None
    # The base the adapter is trained on: None loads the plain causal LM (models.load_causal_lm).
    load_base: Callable[[str, str | None], PreTrainedModel] | None = None
    save: Callable[[PreTrainedModel, Path], None] = save_as_is  # writes adapter/ or model/
    trains_on: Literal["prepared", "preferences"] = "prepared"  # preferences: training/dpo.py's loop

    @property
    def description(self) -> str:
        return METHOD_DESCRIPTIONS[self.name]


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name not in METHOD_NAMES:
        raise ValueError(f"method '{method.name}' is not declared in core/method_names.py")
    if method.name in _METHODS:
        raise ValueError(f"method '{method.name}' is registered twice")
    _METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DomaintuneError(f"train.method: '{name}' is not a method{hint}; choose one of {', '.join(names())}")
    return _METHODS[name]


def names() -> list[str]:
    """The registered methods, in the order core declares them."""
    return [name for name in METHOD_NAMES if name in _METHODS]


def saved_as(name: str | None) -> str | None:
    """`adapter` or `model` for a training run's method; None for other folders (base, tfidf-logreg)."""
    method = _METHODS.get(name or "")
    return method.saves if method else None


def check_method_supported(t: TrainConfig) -> None:
    """Fail before anything is loaded when the method cannot run on this machine."""
    import torch

    method = get(t.method)
    if method.needs_cuda and not torch.cuda.is_available():
        raise DomaintuneError(f"train.method={t.method} needs a CUDA GPU {method.needs_cuda}")
