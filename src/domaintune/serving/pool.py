"""The models behind `domaintune serve`: one base model in memory, every LoRA run as a named adapter.

Adapters are attached to the one shared base with peft's multi-adapter API (`load_adapter`,
`set_adapter`, `disable_adapter()` for the base itself), so serving ten runs costs one base model plus
ten small adapters. Which adapter is active is model-wide state, so the model runs one batch at a time
under `lock`; plain LoRA adapters and the base share one batch through peft's `adapter_names=` (see
`mixes_in_batch`), and serving/batcher.py decides which requests make a batch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel, PeftType
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.core.errors import DomaintuneError
from domaintune.core.run_card import read_run_card
from domaintune.core.schema import Config, PromptConfig
from domaintune.modeling.models import load_base, load_causal_lm, load_tokenizer
from domaintune.modeling.runs import BASE, is_adapter_run, run_config, weights_dir
from domaintune.serving.decode import Generation, GenParams, Row, decode_batch

__all__ = ["Generation", "GenParams", "ModelPool", "ServedModel", "mixes_in_batch", "pad_id"]


@dataclass
class ServedModel:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapter: str | None  # adapter name on the shared base; None: the base itself or a full model
    prompt: PromptConfig  # the run's own prompt rendering, for review prompts drawn from its review/val split
    prepared_dir: str
    mixes: bool = False  # its rows may share a batch with other adapters' rows (mixes_in_batch)


class ModelPool:
    """Named models: `base` (optional) plus one per run folder, named after the folder."""

    def __init__(self, runs: list[str | Path], include_base: bool, cfg: Config):
        self.models: dict[str, ServedModel] = {}
        self.lock = threading.Lock()  # one batch at a time on the shared weights
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
        for served in self.models.values():
            if served.model is model:
                served.mixes = mixes_in_batch(model, served.adapter)

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
        """Generate from `name` alone, now (the server batches through serving/batcher.py instead); `emit`
        receives text pieces as they become final. Setting `cancel` stops at the next token."""
        served = self.get(name)
        row = Row(prompt_ids, params, served.tokenizer, emit, cancel)
        with self.lock, self.selected(served):
            decode_batch(served.model, [row], pad_id(served.tokenizer))
        return row.result

    @contextlib.contextmanager
    def selected(self, served: ServedModel):
        """Make `served`'s adapter the one every row of the shared model uses (hold `lock`)."""
        if not isinstance(served.model, PeftModel):
            yield
        elif served.adapter is None:
            with served.model.disable_adapter():
                yield
        else:
            served.model.set_adapter(served.adapter)
            yield


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Any id will do under the attention mask; SmolLM2's tokenizer names none.
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def mixes_in_batch(model: PreTrainedModel, adapter: str | None) -> bool:
    """Whether rows of this adapter (None: the base) can share a batch with other adapters' rows through
    peft's `adapter_names=`: only plain LoRA adapters, unmerged (peft refuses merged adapters and DoRA
    there, and other tuners and LoRA variants take other paths); other adapters get batches of their own."""
    if not isinstance(model, PeftModel):
        return False
    lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if any(layer.merged for layer in lora_layers):
        return False
    if adapter is None:
        return True
    return model.peft_config[adapter].peft_type == PeftType.LORA and not any(
        adapter in layer.lora_variant for layer in lora_layers)
