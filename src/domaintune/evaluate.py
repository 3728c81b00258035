"""Stage 3, evaluate: a run folder (or the base model) on the test split -> metrics.json.

Perplexity is token-weighted over the test documents' own text (padding and each document's first
token, which has no context, are not counted). Labelled data is also classified by scoring each label's
log-likelihood as the assistant's answer, so base and adapted models are judged by the same rule.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import Config, save_config
from .io import atomic_write_json
from .prepare import read_data_card, read_split
from .render import answer_ids, encode_text, prompt_ids
from .runs import BASE, load_run_model, run_config
from .runtime import configure_threads
from .seqcls import predict_labels


def run_evaluate(cfg: Config, target: str = BASE) -> dict:
    """Evaluate `target` (a run folder, or "base" for `cfg.model`) and write its metrics.json."""
    configure_threads(cfg.threads)
    model_cfg = cfg if target == BASE else run_config(target)
    model, tokenizer = load_run_model(target, cfg)
    model.eval()
    rows = read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]
    labels = read_data_card(cfg.data.output_dir).get("labels")

    started = time.perf_counter()
    metrics: dict = {"target": target, "base_model": model_cfg.model.name, "test_rows": len(rows)}
    texts = [r["text"] for r in rows]
    if target != BASE and model_cfg.train.task == "classification":
        # A classification head has no language-model loss: it is judged by its predictions alone.
        predicted = predict_labels(model, tokenizer, texts, labels, cfg.evaluate.max_length, cfg.evaluate.batch_size)
        metrics.update(classification_metrics([r["label"] for r in rows], predicted, labels))
        metrics["eval_seconds"] = round(time.perf_counter() - started, 2)
        atomic_write_json(Path(target) / "metrics.json", metrics)
        return metrics
    metrics.update(perplexity(model, tokenizer, texts, cfg.evaluate.max_length, cfg.evaluate.batch_size))
    if labels and tokenizer.chat_template:
        predicted = classify(model, tokenizer, model_cfg, [r["text"] for r in rows], labels,
                             cfg.evaluate.max_length, cfg.evaluate.batch_size)
        metrics.update(classification_metrics([r["label"] for r in rows], predicted, labels))
    metrics["eval_seconds"] = round(time.perf_counter() - started, 2)

    out_dir = Path(cfg.evaluate.base_output_dir if target == BASE else target)
    atomic_write_json(out_dir / "metrics.json", metrics)
    if target == BASE:
        save_config(cfg, out_dir)
    return metrics


def _right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask


def _length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def perplexity(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, batch_size: int
) -> dict:
    seqs = [encode_text(tokenizer, t, max_length).input_ids for t in texts]
    total_nll, total_tokens = 0.0, 0
    for batch in _length_sorted_batches([len(s) for s in seqs], batch_size):
        ids, mask = _right_pad([seqs[i] for i in batch], tokenizer.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets, target_mask = ids[:, 1:], mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        total_nll += nll[target_mask].sum().item()
        total_tokens += int(target_mask.sum())
    loss = total_nll / max(total_tokens, 1)
    return {"test_loss": round(loss, 5), "perplexity": round(math.exp(loss), 4), "tokens_scored": total_tokens}


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
    opt_ids, opt_mask = _right_pad([o[:-1] for o in options], pad_id)  # inputs predicting o[1:]
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


def classify(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: Config,
    texts: list[str],
    labels: list[str],
    max_length: int,
    batch_size: int,
) -> list[str]:
    options = [answer_ids(tokenizer, cfg.prompt, label) for label in labels]
    budget = max_length - max(len(o) for o in options)
    prompts = [prompt_ids(tokenizer, cfg.prompt, t, budget) for t in texts]
    predicted: list[str] = [""] * len(texts)
    for batch in _length_sorted_batches([len(p) for p in prompts], batch_size):
        scores = score_options(model, [prompts[i] for i in batch], options, tokenizer.pad_token_id)
        for i, best in zip(batch, scores.argmax(-1).tolist(), strict=False):
            predicted[i] = labels[best]
    return predicted


def classification_metrics(gold: list[str], predicted: list[str], labels: list[str]) -> dict:
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=labels, zero_division=0
    )
    return {
        "accuracy": round(sum(g == p for g, p in zip(gold, predicted, strict=False)) / max(len(gold), 1), 5),
        "macro_f1": round(float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)), 5),
        "per_class": {
            label: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                    "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=False)
        },
        "confusion_matrix": {"labels": labels, "rows_gold_cols_predicted":
                             confusion_matrix(gold, predicted, labels=labels).tolist()},
    }
