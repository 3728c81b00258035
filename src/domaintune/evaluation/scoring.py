"""Scoring a causal LM: label log-likelihoods, greedy generation samples (perplexity: perplexity.py).

Torch lives here; the pure metric arithmetic is in metrics.py so it is tested without a model.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.core.schema import Config
from domaintune.modeling.render import answer_ids, encode_text, prompt_ids


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask


def progress(batches: list[list[int]], what: str):
    # Evaluating the real model takes a minute or more on a CPU; show that it is moving.
    return tqdm(batches, desc=what, unit="batch", leave=False, disable=len(batches) < 2)


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def score_options(
    model: PreTrainedModel, prompts: list[list[int]], options: list[list[int]], pad_id: int
) -> torch.Tensor:
    """Log-likelihood of each option after each prompt, shape (prompts, options).

    The prompt runs once with a KV cache that is then repeated per option, instead of running
    prompt + option for every option; the hand-written part exists because no library scores
    multiple-choice continuations with a shared prefix.
    """
    n_opt = len(options)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding keeps every prompt's last token in the last column
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    first = torch.log_softmax(out.logits[:, -1].float(), -1)  # (B, V)
    scores = torch.stack([first[:, opt[0]] for opt in options], dim=1)  # (B, n_opt)
    longest = max(len(o) for o in options)
    if longest == 1:
        return scores
    cache = out.cache
    cache.batch_repeat_interleave(n_opt)
    opt_ids, opt_mask = right_pad([o[:-1] for o in options], pad_id)  # inputs predicting o[1:]
    opt_ids, opt_mask = opt_ids.repeat(len(prompts), 1), opt_mask.repeat(len(prompts), 1)
    full_mask = torch.cat([mask.repeat_interleave(n_opt, 0), opt_mask], dim=1)
    start = mask.sum(-1).repeat_interleave(n_opt, 0).unsqueeze(1)
    opt_positions = start + torch.arange(opt_ids.shape[1]).unsqueeze(0)
    logits = model(
        input_ids=opt_ids, attention_mask=full_mask, position_ids=opt_positions, cache=cache
    ).logits.float()
    logp = torch.log_softmax(logits, -1)  # (B*n_opt, L, V)
    rest = torch.zeros(len(prompts) * n_opt)
    for row in range(len(prompts) * n_opt):
        option = options[row % n_opt]
        for j, token in enumerate(option[1:]):
            rest[row] += logp[row, j, token]
    return scores + rest.view(len(prompts), n_opt)


def score_labels(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: Config,
    texts: list[str],
    labels: list[str],
    max_length: int,
    batch_size: int,
) -> torch.Tensor:
    """Each label's log-likelihood as the assistant's answer to each text, shape (texts, labels); the
    prediction is the row's argmax, and the whole row is kept so that predictions.jsonl can show how sure."""
    options = [answer_ids(tokenizer, cfg.prompt, label) for label in labels]
    budget = max_length - max(len(o) for o in options)
    prompts = [prompt_ids(tokenizer, cfg.prompt, t, budget) for t in texts]
    scores = torch.zeros(len(texts), len(labels))
    for batch in progress(length_sorted_batches([len(p) for p in prompts], batch_size), "label scoring"):
        scores[batch] = score_options(model, [prompts[i] for i in batch], options, tokenizer.pad_token_id)
    return scores


@torch.no_grad()
def greedy_continuation(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ids: list[int], max_new_tokens: int
) -> str:
    inputs = torch.tensor([ids])
    out = model.generate(
        input_ids=inputs,
        attention_mask=torch.ones_like(inputs),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(out[0, inputs.shape[1]:], skip_special_tokens=True).strip()


def generation_samples(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: Config,
    rows: list[dict],
    max_length: int,
    max_new_tokens: int,
) -> list[dict]:
    """Prompt, reference and greedy output for each row, for reading the models side by side.

    Labelled rows are asked the task's question (the reference is the label); raw text is cut in half
    and the model continues the first half (the reference is the second half).
    """
    samples = []
    for row in rows:
        if row.get("label") is not None and tokenizer.chat_template:
            ids = prompt_ids(tokenizer, cfg.prompt, row["text"], max_length)
            reference = row["label"]
        else:
            text_ids = encode_text(tokenizer, row["text"], max_length).input_ids
            half = max(1, len(text_ids) // 2)
            ids = text_ids[:half]
            reference = tokenizer.decode(text_ids[half:], skip_special_tokens=True)
        samples.append({
            "id": row.get("id"),
            "prompt": row["text"] if row.get("label") is not None else tokenizer.decode(ids),
            "reference": reference,
            "output": greedy_continuation(model, tokenizer, ids, max_new_tokens),
        })
    return samples
