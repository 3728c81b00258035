"""The `sweep:` section of a config: which keys `domaintune sweep` searches, how, and for how long.

A search space maps dotted config keys to a range or a list of choices:

    sweep:
      space:
        train.learning_rate: {low: 1e-4, high: 2e-3, log: true}
        train.lora.r: [4, 8, 16]                      # a list is a categorical choice
        train.lora.target_modules: [all-linear, [q_proj, v_proj]]
        train: [{method: lora, learning_rate: 5e-4}, {method: full, learning_rate: 5e-5}]

A section key (the last line) takes mappings merged into that section: keys that must change together.
The section lives apart from schema.py to keep that file short; `check_search_space` is called by
`Config`'s own validator, so a bad space fails at load like any other key.
"""

from __future__ import annotations

import copy
import difflib
import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from domaintune.core.dotted import set_dotted
from domaintune.core.strict import StrictModel
from domaintune.core.validation import describe_validation_error

if TYPE_CHECKING:
    from domaintune.core.schema import Config

# Keys a sweep cannot search, and why (the error says it).
FIXED = {
    "data": "data is prepared once for all trials",
    "evaluate": "every trial is measured the same way",
    "model": "all trials share one base model (prepare's token filters and compare rely on it)",
    "sweep": "the sweep's own settings are not a trial's",
    "train.output_dir": "each trial writes its own run folder",
    "train.select_by": "it is the sweep's objective (trials scored by different rules do not compare): set it "
                       "once, outside sweep.space",
}


class SearchParam(StrictModel):
    type: Literal["int", "float", "categorical"] | None = Field(
        None, description="Inferred when unset: `categorical` with `choices`, `int` when low and high are "
        "integers, else `float`.",
    )
    low: int | float | None = Field(None, description="Smallest value of a range (int, float).")
    high: int | float | None = Field(None, description="Largest value of a range, included.")
    step: int | float | None = Field(None, gt=0, description="Grid step of a range; not with `log`.")
    log: bool = Field(False, description="Sample a range on a log scale (learning rates).")
    choices: list[Any] | None = Field(None, description="Values to choose from (scalars, lists or mappings).")

    @model_validator(mode="before")
    @classmethod
    def _a_list_is_choices(cls, value: Any) -> Any:
        return {"choices": value} if isinstance(value, list) else value

    @property
    def kind(self) -> str:
        if self.type:
            return self.type
        if self.choices is not None:
            return "categorical"
        return "int" if isinstance(self.low, int) and isinstance(self.high, int) else "float"

    @model_validator(mode="after")
    def _shape(self) -> SearchParam:
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("`choices` cannot be combined with low/high/step/log")
            if len({choice_label(c) for c in self.choices}) < len(self.choices):
                raise ValueError(f"choices repeat a value: {self.choices}")
            return self
        if self.choices is not None:
            raise ValueError(f"the {self.kind} range takes low/high, not `choices`")
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"the {self.kind} range needs low < high (got low={self.low}, high={self.high})")
        if self.log and (self.step is not None or self.low <= 0):
            raise ValueError("the log range needs low > 0 and no step")
        if self.kind == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError("the int range needs integer low, high and step")
        return self

    def candidates(self) -> list[Any]:
        """The values a load-time check validates: every choice, or both ends of a range."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def grid(self) -> list[Any]:
        """Every value a grid visits; categorical choices appear as their labels."""
        if self.kind == "categorical":
            return [choice_label(c) for c in self.choices]
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ValueError("sampler grid needs `choices` or a `step` for float ranges")
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]


class PrunerSettings(StrictModel):
    type: Literal["median", "none"] = Field(
        "median", description="`median`: stop a trial whose objective (the val figure `train.select_by` names) "
        "is worse than the median of earlier trials at the same step (Optuna's MedianPruner; needs "
        "`train.eval_steps`); `none`: never stop early.",
    )
    startup_trials: int = Field(2, ge=0, description="Trials that always run to the end before any is pruned.")
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps a trial always trains before it can be pruned.")


class SweepConfig(StrictModel):
    space: dict[str, SearchParam] = Field(
        default_factory=dict,
        description="Dotted config key -> `{low, high, log, step}` range or list of `choices` (a section key "
        "such as `train` takes mappings merged into it). data/evaluate/model/sweep keys and `train.select_by` "
        "(the objective) are fixed.",
    )
    trials: int | None = Field(
        None, ge=1, description="Trials to finish (resumed sweeps count finished ones); unset: grid: every "
        "combination, tpe: until `timeout_minutes`.",
    )
    timeout_minutes: float | None = Field(
        None, gt=0, description="Start no new trial after this many minutes of trials (a running one finishes).",
    )
    sampler: Literal["tpe", "grid"] = Field(
        "tpe", description="`tpe`: Optuna's TPE (seeded); `grid`: every combination once (needs choices or steps).",
    )
    startup_trials: int | None = Field(
        None, ge=1, description="tpe: random trials before TPE models the space; unset: half of `trials`, at most 10.",
    )
    pruner: PrunerSettings = Field(default_factory=PrunerSettings, description="Early stopping of bad trials.")
    seed: int | None = Field(None, description="Seed of the sampler and the importance estimate; unset: `seed`.")
    output_dir: str = Field(
        "sweeps/sweep", description="Sweep folder: study.sqlite, prepared/, trials/trial-NNN/ run folders, report.",
    )

    @model_validator(mode="after")
    def _has_budget(self) -> SweepConfig:
        if self.space and self.sampler == "tpe" and self.trials is None and self.timeout_minutes is None:
            raise ValueError("sweep.sampler=tpe needs a budget: set sweep.trials or sweep.timeout_minutes")
        return self


def choice_label(choice: Any) -> Any:
    """Optuna stores only scalars: a list choice becomes `q_proj,v_proj`, a mapping `method=full,...`."""
    if isinstance(choice, list):
        return ",".join(str(c) for c in choice)
    if isinstance(choice, dict):
        return ",".join(f"{k}={v}" for k, v in choice.items())
    return choice


def schema_keys(section: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Every dotted key of the schema -> whether it is a section (True) or a leaf (False)."""
    keys: dict[str, bool] = {}
    for name, field in section.model_fields.items():
        annotation = field.annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        keys[prefix + name] = is_section
        if is_section:
            keys.update(schema_keys(annotation, f"{prefix}{name}."))
    return keys


def _fixed(key: str, param: SearchParam) -> tuple[str, str | None]:
    """The fixed key that `key` is or lies in, or that a section's mapping choices set; and why."""
    nested = [f"{key}.{k}" for c in param.choices or [] if isinstance(c, dict) for k in _dotted_keys(c)]
    for dotted in (key, *nested):
        reason = FIXED.get(dotted) or FIXED.get(dotted.split(".")[0])
        if reason:
            return dotted, reason
    return key, None


def _dotted_keys(mapping: dict[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for k, v in mapping.items():
        keys += _dotted_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]
    return keys


def check_search_space(cfg: Config) -> None:
    """Raise ValueError (one line) for a key that is not searchable or a candidate value that does not validate.

    Called by `Config`'s own validator (schema.py), so a bad space fails at load like any other key.
    """
    schema = type(cfg)
    keys = schema_keys(schema)
    base = cfg.model_dump(mode="json", exclude={"sweep"})
    for key, param in cfg.sweep.space.items():
        if key not in keys:
            close = difflib.get_close_matches(key, [k for k, sec in keys.items() if not sec], n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"sweep.space: unknown key '{key}'{hint}")
        fixed, reason = _fixed(key, param)
        if reason:
            inside = "" if fixed == key else f" (set by '{key}')"
            raise ValueError(f"sweep.space: '{fixed}'{inside} cannot be searched: {reason}")
        if keys[key] and not all(isinstance(c, dict) for c in param.choices or [None]):
            raise ValueError(f"sweep.space: '{key}' is a section: its choices must be mappings of its keys")
        for candidate in param.candidates():
            try:
                schema.model_validate(set_dotted(copy.deepcopy(base), key, candidate))
            except ValidationError as exc:
                problem = describe_validation_error(exc, schema)
                raise ValueError(f"sweep.space: '{key}' value {candidate!r}: {problem}") from None
        if cfg.sweep.sampler == "grid":
            try:
                param.grid()
            except ValueError as exc:
                raise ValueError(f"sweep.space: '{key}': {exc}") from None
    if cfg.sweep.pruner.type != "none" and cfg.train.eval_steps is None:
        raise ValueError("sweep.pruner.type=median needs train.eval_steps (val scored during training), "
                         "or set sweep.pruner.type=none")
