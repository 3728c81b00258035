"""The models behind `domaintune serve`: one base model in memory, every LoRA run as a named adapter.

Adapters are attached to the one shared base with peft's multi-adapter API (`load_adapter`,
`set_adapter`, `disable_adapter()` for the base itself), so serving ten runs costs one base model plus
ten small adapters. Which adapter is active is model-wide state, so generations run one at a time under
a lock; `serve.py` decides how many requests may wait for it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from domaintune.core.errors import DomaintuneError
from domaintune.core.run_card import read_run_card
from domaintune.core.schema import Config, PromptConfig
from domaintune.modeling.models import load_base, load_causal_lm, load_tokenizer
from domaintune.modeling.runs import BASE, is_adapter_run, run_config, weights_dir


@dataclass
class GenParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length" (max_tokens reached)
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ServedModel:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapter: str | None  # adapter name on the shared base; None: the base itself or a full model
    prompt: PromptConfig  # the run's own prompt rendering, for review prompts drawn from its review/val split
    prepared_dir: str


class ModelPool:
    """Named models: `base` (optional) plus one per run folder, named after the folder."""

    def __init__(self, runs: list[str | Path], include_base: bool, cfg: Config):
        self.models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        adapters: list[tuple[str, Path, Config]] = []
        fulls: list[tuple[str, Path, Config]] = []
        for run in runs:
            name = Path(run).resolve().name
            if name == BASE or name in {n for n, _, _ in adapters + fulls}:
                raise DomaintuneError(f"two served models would be named '{name}': give run folders distinct names")
            own = run_config(run)
            (adapters if is_adapter_run(read_run_card(run)) else fulls).append((name, Path(run), own))
        if not (include_base or adapters or fulls):
            raise DomaintuneError("nothing to serve: name at least one run folder, or pass --base")
        base_cfg = adapters[0][2] if adapters else cfg
        for _, run, own in adapters:
            if (own.model.name, own.model.revision) != (base_cfg.model.name, base_cfg.model.revision):
                raise DomaintuneError(
                    f"{run}: trained on '{own.model.name}' but other runs on '{base_cfg.model.name}'; "
                    "serve runs of one base model per process"
                )
        self.base_model_name = base_cfg.model.name
        if adapters or include_base:
            self._load_shared(adapters, include_base, base_cfg)
        for name, run, own in fulls:
            folder = str(weights_dir(run))
            model = load_causal_lm(folder).eval()
            self.models[name] = ServedModel(name, model, load_tokenizer(folder), None, own.prompt,
                                            own.data.output_dir)

    def _load_shared(self, adapters: list[tuple[str, Path, Config]], include_base: bool, base_cfg: Config) -> None:
        base, tokenizer = load_base(base_cfg.model.name, base_cfg.model.revision)
        model: PreTrainedModel = base
        for i, (name, run, own) in enumerate(adapters):
            folder = weights_dir(run)
            # peft keeps adapters in torch ModuleDicts, whose keys may not hold "." (a folder named
            # "v1.2" raised KeyError at start): the adapter gets a neutral name, the model keeps the folder's.
            adapter = f"adapter{i}"
            if i == 0:
                model = PeftModel.from_pretrained(base, folder, adapter_name=adapter)
            else:
                model.load_adapter(folder, adapter_name=adapter)
            self.models[name] = ServedModel(name, model, load_tokenizer(str(folder)), adapter, own.prompt,
                                            own.data.output_dir)
        model.eval()
        if include_base:
            self.models[BASE] = ServedModel(BASE, model, tokenizer, None, base_cfg.prompt, base_cfg.data.output_dir)

    def get(self, name: str) -> ServedModel:
        if name not in self.models:
            raise KeyError(name)
        return self.models[name]

    def chat_ids(self, name: str, messages: list[dict]) -> list[int]:
        tokenizer = self.get(name).tokenizer
        if not tokenizer.chat_template:
            raise DomaintuneError(f"model '{name}' has no chat template; use /v1/completions")
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_ids(self, name: str, text: str) -> list[int]:
        return self.get(name).tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(
        self,
        name: str,
        prompt_ids: list[int],
        params: GenParams,
        emit: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Generate from `name`; `emit` receives text pieces as they become final (for streaming).

        Setting `cancel` stops the generation at its next token (the client went away); set before the
        turn came, nothing is generated.
        """
        served = self.get(name)
        collector = _StopAwareStreamer(served.tokenizer, params.stop, emit)
        cancel = cancel or threading.Event()
        inputs = torch.tensor([prompt_ids])
        sampling = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            if params.temperature > 0 else {"do_sample": False}
        )
        with self._lock, torch.no_grad(), self._selected(served), self._seeded(served.model, params.seed):
            if cancel.is_set():
                return Generation("", "stop", len(prompt_ids), 0)
            served.model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=params.max_tokens,
                pad_token_id=served.tokenizer.pad_token_id,
                streamer=collector,
                stopping_criteria=StoppingCriteriaList([_Halt(lambda: collector.stopped or cancel.is_set())]),
                **sampling,
            )
        eos = served.tokenizer.eos_token_id
        hit_length = len(collector.ids) >= params.max_tokens and not collector.stopped
        ended_on_eos = bool(collector.ids) and collector.ids[-1] == eos
        return Generation(collector.final_text(), "length" if hit_length and not ended_on_eos else "stop",
                          len(prompt_ids), len(collector.ids))

    @staticmethod
    @contextlib.contextmanager
    def _seeded(model: PreTrainedModel, seed: int | None):
        """A seeded request samples from its own seed and leaves the process's random state as it found it,
        so that it does not decide what later unseeded requests draw."""
        if seed is None:
            yield
            return
        devices = [model.device.index or 0] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    @contextlib.contextmanager
    def _selected(self, served: ServedModel):
        if not isinstance(served.model, PeftModel):
            yield
        elif served.adapter is None:
            with served.model.disable_adapter():
                yield
        else:
            served.model.set_adapter(served.adapter)
            yield


class _Halt(StoppingCriteria):
    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)


class _StopAwareStreamer(BaseStreamer):
    """Decodes new tokens, cuts at the first stop string and releases only text that is final.

    transformers' TextIteratorStreamer knows nothing of stop strings, and its `stop_strings` option keeps
    the stop string in the output, which OpenAI's API leaves out; so the few lines here do both: text
    that could still be the start of a stop string (or half a UTF-8 character) is held back until it is
    decided.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: list[str], emit: Callable[[str], None] | None):
        self.tokenizer, self.stops, self.emit = tokenizer, [s for s in stops if s], emit
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.stopped = False
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        if self.stopped:
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.stops if s in text]
        if cuts:
            self.text, self.stopped = text[: min(cuts)], True
            self._release(len(self.text))
            return
        self.text = text
        self._release(len(text) - self._undecided_tail(text))

    def end(self) -> None:
        self._release(len(self.text))

    def final_text(self) -> str:
        return self.text

    def _undecided_tail(self, text: str) -> int:
        tail = len(text) - len(text.rstrip("\ufffd"))  # an incomplete multi-byte character so far
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:k]):
                    tail = max(tail, k)
                    break
        return tail

    def _release(self, upto: int) -> None:
        if upto > self.sent:
            piece = self.text[self.sent:upto]
            self.sent = upto
            if self.emit is not None:
                self.emit(piece)
