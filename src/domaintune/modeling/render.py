"""Turning prepared rows into token sequences: chat-template SFT examples and raw causal-LM text.

Shared by train (what the model learns from) and evaluate (what it is scored on), so the two stages
can never disagree about the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import PromptConfig

IGNORE_INDEX = -100  # label value that transformers' loss skips


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def _messages(prompt: PromptConfig, text: str, answer: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    messages.append({"role": "user", "content": f"{prompt.instruction}\n\n{text}"})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def _template_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation: bool) -> list[int]:
    if not tokenizer.chat_template:
        raise DomaintuneError(
            f"tokenizer of '{tokenizer.name_or_path}' has no chat template: use train.task=causal-lm or "
            "train.task=classification, or an instruction-tuned model; see docs/troubleshooting.md#no-chat-template"
        )
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def truncate_tokens(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str:
    """Cut `text` to at most `max_tokens` tokens (the document is cut, never the answer)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[: max(max_tokens, 0)], skip_special_tokens=True)


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: PromptConfig, text: str, max_length: int, reserved: int = 0
) -> list[int]:
    """The rendered user turn plus the assistant header, with the document cut to fit `max_length`
    less `reserved` tokens (the answer that follows, in training)."""
    overhead = len(_template_ids(tokenizer, _messages(prompt, ""), generation=True))
    budget = max_length - reserved - overhead
    if budget < 1:
        answer = f" and the answer {reserved}" if reserved else ""
        raise DomaintuneError(
            f"max_length {max_length} leaves no room for the document: the prompt takes {overhead} tokens{answer}; "
            "raise train.max_length / evaluate.max_length or shorten prompt.instruction; "
            "see docs/troubleshooting.md#token-budget-too-small"
        )
    ids = _template_ids(tokenizer, _messages(prompt, truncate_tokens(tokenizer, text, budget)), True)
    while len(ids) > max_length and budget > 0:
        # The document's tokens can merge differently next to the template's ("\n\n" + text): cut more.
        budget -= len(ids) - max_length
        ids = _template_ids(tokenizer, _messages(prompt, truncate_tokens(tokenizer, text, budget)), True)
    return ids


def answer_ids(tokenizer: PreTrainedTokenizerBase, prompt: PromptConfig, answer: str) -> list[int]:
    """Tokens of an assistant answer as they follow the prompt, up to and including end-of-turn."""
    head = _template_ids(tokenizer, _messages(prompt, "x"), generation=True)
    full = _template_ids(tokenizer, _messages(prompt, "x", answer), generation=False)
    if full[: len(head)] != head:
        raise DomaintuneError(
            f"chat template of '{tokenizer.name_or_path}' renders the prompt differently once an answer "
            "follows; answer-only loss cannot be located"
        )
    tail = full[len(head):]
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
    if eos in tail:
        tail = tail[: tail.index(eos) + 1]
    return tail


def encode_sft(
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptConfig,
    text: str,
    answer: str,
    max_length: int,
    loss_on: str = "answer",
    answer_cache: dict[str, list[int]] | None = None,
) -> Encoded:
    """Prompt + answer; labels mask the prompt unless `loss_on == "all"`."""
    if answer_cache is not None and answer in answer_cache:
        answer_part = answer_cache[answer]
    else:
        answer_part = answer_ids(tokenizer, prompt, answer)
        if answer_cache is not None:
            answer_cache[answer] = answer_part
    prompt_part = prompt_ids(tokenizer, prompt, text, max_length, reserved=len(answer_part))
    masked = [IGNORE_INDEX] * len(prompt_part) if loss_on == "answer" else list(prompt_part)
    return Encoded(prompt_part + answer_part, masked + list(answer_part))


def encode_messages(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], max_length: int, loss_on: str = "answer"
) -> Encoded:
    """A whole conversation; with `loss_on == "answer"` only the assistant turns carry loss.

    Each assistant turn's tokens are located by rendering the conversation up to it with and without
    that turn, so any chat template that renders prefixes stably works. A conversation longer than
    `max_length` is cut at the end; the data card's token filters can drop such rows instead.
    """
    ids: list[int] = []
    labels: list[int] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        head = _template_ids(tokenizer, messages[:i], generation=True)
        turn = _template_ids(tokenizer, messages[: i + 1], generation=False)
        if head[: len(ids)] != ids or turn[: len(head)] != head:
            raise DomaintuneError(
                f"chat template of '{tokenizer.name_or_path}' does not render conversations as stable "
                "prefixes; per-turn answer loss cannot be located"
            )
        context = head[len(ids):]
        ids += context + turn[len(head):]
        labels += ([IGNORE_INDEX] * len(context) if loss_on == "answer" else context) + turn[len(head):]
    if not ids:
        raise DomaintuneError("a chat row has no assistant turn to learn from")
    return Encoded(ids[:max_length], labels[:max_length])


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, max_length: int | None) -> Encoded:
    """Raw document tokens for causal-LM training and perplexity, cut to `max_length` (None: whole).

    No end-of-sequence token is appended: an instruct model's EOS is an end-of-turn marker, and scoring
    it after raw text would charge the base model for a convention it never learned.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
    return Encoded(ids, list(ids))
