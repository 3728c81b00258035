"""Decoding several requests as one batch on one model, each row with its own parameters.

transformers' `generate()` runs the batch: the key/value cache, the attention mask and the position ids
it derives from the mask, so left padding changes no row's answer (beyond fp32 roundoff, see
tests/serving/test_serve_batching.py). What `generate()` has no per-row notion of is added here, through its
two hooks:

    `_RowSampler` (a logits processor)   per-row temperature, top_p and seed: a sampled row draws its
                                         token from its own generator, so its answer does not depend on
                                         which other requests share its batch, and then leaves only that
                                         token for `generate()`'s greedy pick; greedy rows are untouched
    `_RowTracker` (a stopping criterion) hands each row's new token to the row, which streams its text,
                                         cuts stop strings and ends at its own max_tokens, end of turn or
                                         cancellation; an ended row is done at once (its client gets its
                                         answer) while the batch goes on for the others

The tracker is called once per step with every row's new token, whatever the order of `generate()`'s
streamer and stopping calls, so it is the one place that decides what each row has produced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

# transformers samples from the 50 likeliest tokens when a model's generation config names no top_k
# (GenerationConfig's global defaults; 0 turns the cut off), and so do the rows here.
DEFAULT_TOP_K = 50


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


class Row:
    """One request in a batch: its prompt and parameters, where its text goes, and what it produced.
    `on_end` receives the Generation once, from the decoding thread, as soon as the row has ended."""

    def __init__(self, prompt_ids: list[int], params: GenParams, tokenizer: PreTrainedTokenizerBase,
                 emit: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
                 on_end: Callable[[Generation], None] | None = None):
        self.prompt_ids, self.params = prompt_ids, params
        self.cancel = cancel or threading.Event()
        self.on_end = on_end
        self.text = StopAwareText(tokenizer, params.stop, emit)
        self.ids: list[int] = []
        self.end_tokens: set[int] = set()  # set by decode_batch from the model and tokenizer
        self.ended = False
        self.result: Generation | None = None
        self.generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None

    @property
    def samples(self) -> bool:
        return self.params.temperature > 0

    def advance(self, token: int) -> None:
        if self.cancel.is_set():  # the client left: nothing more is produced for it
            self.end()
            return
        self.ids.append(token)
        self.text.add(self.ids)
        if token in self.end_tokens or self.text.stopped or len(self.ids) >= self.params.max_tokens:
            self.end()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.text.end()
        hit_length = len(self.ids) >= self.params.max_tokens and not self.text.stopped
        ended_on_eos = bool(self.ids) and self.ids[-1] in self.end_tokens
        self.result = Generation(self.text.text, "length" if hit_length and not ended_on_eos else "stop",
                                 len(self.prompt_ids), len(self.ids))
        if self.on_end is not None:
            self.on_end(self.result)


def end_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The tokens that end an answer: the model's generation config's (which generate() stops on) and the
    tokenizer's end of sequence."""
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured]
    return {t for t in [*configured, tokenizer.eos_token_id] if t is not None}


def decode_batch(model: PreTrainedModel, rows: list[Row], pad_id: int, adapter_names: list[str] | None = None) -> None:
    """Generate every row to its end. `adapter_names` (one per row, peft's "__base__" for the base) mixes
    LoRA adapters in the batch; without it the model's current adapter selection applies to all rows.

    Left padding keeps every prompt's last token in the last column, where generation continues; the
    attention mask hides the padding and generate() numbers positions from the mask, so a padded row
    sees the same positions as it would alone.
    """
    width = max(len(row.prompt_ids) for row in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows], device=model.device)
    attention = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows],
                             device=model.device)
    sampled = any(row.samples for row in rows)
    top_k = model.generation_config.top_k
    sampler = [_RowSampler(rows, DEFAULT_TOP_K if top_k is None else top_k)] if sampled else []
    for row in rows:
        row.end_tokens = end_tokens(model, row.text.tokenizer)
    with torch.no_grad():
        model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max(row.params.max_tokens for row in rows),
            do_sample=False,  # sampled rows have drawn their token in _RowSampler already
            pad_token_id=pad_id,
            logits_processor=LogitsProcessorList(sampler),
            stopping_criteria=StoppingCriteriaList([_RowTracker(rows)]),
            **({"adapter_names": adapter_names} if adapter_names is not None else {}),
        )
    for row in rows:  # generate() stopped for a reason of its own (the model's longest context): as they are
        row.end()


class _RowSampler(LogitsProcessor):
    """Samples every sampled row's token as generate() would sample it alone: temperature, the `top_k`
    likeliest tokens, top-p, then a draw. The draw is made among the top-k candidates only: outside them
    generate()'s own chain leaves probability 0, and sorting and drawing from 50 scores instead of the
    whole vocabulary (49152 for SmolLM2) is what keeps sampling cheap for a batch of rows."""

    def __init__(self, rows: list[Row], top_k: int):
        self.rows, self.top_k = rows, top_k
        self.warpers = [self._warpers(row.params) if row.samples else None for row in rows]

    @staticmethod
    def _warpers(params: GenParams) -> LogitsProcessorList:
        warpers = LogitsProcessorList()
        if params.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(params.top_p))
        return warpers

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        sampled = [i for i, row in enumerate(self.rows) if self.warpers[i] is not None and not row.ended]
        if not sampled:
            return scores
        vocabulary = scores.shape[-1]
        candidates, ids = scores[sampled].topk(min(self.top_k or vocabulary, vocabulary), dim=-1)
        for j, i in enumerate(sampled):
            probs = torch.softmax(self.warpers[i](input_ids[i:i + 1], candidates[j:j + 1]), dim=-1)
            # No generator: an unseeded row draws from the process's random state, as before batching.
            token = ids[j, torch.multinomial(probs[0], num_samples=1, generator=self.rows[i].generator)].item()
            scores[i] = -torch.inf
            scores[i, token] = 0.0
        return scores


class _RowTracker(StoppingCriteria):
    def __init__(self, rows: list[Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        new_tokens = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, new_tokens, strict=True):
            if not row.ended:
                row.advance(token)
        return torch.tensor([row.ended for row in self.rows], dtype=torch.bool, device=input_ids.device)


class StopAwareText:
    """Decodes a row's tokens, cuts at the first stop string and releases only text that is final.

    transformers' TextIteratorStreamer knows nothing of stop strings or batches, and its `stop_strings`
    option keeps the stop string in the output, which OpenAI's API leaves out; so the few lines here do
    both: text that could still be the start of a stop string (or half a UTF-8 character) is held back
    until it is decided.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: list[str], emit: Callable[[str], None] | None):
        self.tokenizer, self.stops, self.emit = tokenizer, [s for s in stops if s], emit
        self.text = ""
        self.sent = 0
        self.stopped = False

    def add(self, ids: list[int]) -> None:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.stops if s in text]
        if cuts:
            self.text, self.stopped = text[: min(cuts)], True
            self._release(len(self.text))
            return
        self.text = text
        self._release(len(text) - self._undecided_tail(text))

    def end(self) -> None:
        self._release(len(self.text))

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
