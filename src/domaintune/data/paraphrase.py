"""Paraphrase augmentation: the chosen model (`model.name`) rewrites training rows through the generate
path (left-padded batches, greedy or seeded sampling).

A generation is kept only if it is a plausible paraphrase: not empty, not too long (it must end on its
own within `max_length_ratio` times the source's tokens: a model that rambles or never stops is cut
there and dropped), not the source again (nor a copy of another variant), and not a near copy of the
source (shingle Jaccard at or above `data.dedup.threshold`, which a small model often writes by
changing a word or two). Sources longer than `max_new_tokens` are skipped: their paraphrase could not
fit.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np

from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import Config, DedupConfig, PromptConfig
from domaintune.data.clean import clean_text
from domaintune.data.dedup import jaccard, shingles
from domaintune.data.store import Rows
from domaintune.data.variants import same_text, variant

_CHUNK = 256  # rows decided (and held) at a time; batches are cut from each chunk by length
_SLACK = 8  # tokens allowed beyond ratio x source, for a short source that needs a word more


def chosen_rows(rows: Rows, max_rows: int | None, seed: int) -> Rows:
    """The original rows (not weight copies), or a seeded sample of `max_rows` of them in row order."""
    if "copy" in rows.arrays:
        rows = rows.select(rows.arrays["copy"] == 0)
    if max_rows is not None and len(rows) > max_rows:
        rows = rows.select(np.sort(random.Random(seed).sample(range(len(rows)), max_rows)))
    return rows


def paraphrases(rows: Rows, cfg: Config, rejected: Counter) -> Iterator[dict]:
    from domaintune.core.process import torch_threads

    with torch_threads(cfg.threads):
        yield from _paraphrases(rows, cfg, rejected)


def _paraphrases(rows: Rows, cfg: Config, rejected: Counter) -> Iterator[dict]:
    from domaintune.core.runtime import device_name
    from domaintune.modeling.generate import generate_batch
    from domaintune.modeling.models import load_base
    from domaintune.modeling.render import prompt_ids

    settings = cfg.data.augment.paraphrase
    rows = chosen_rows(rows, cfg.data.augment.max_rows, cfg.seed)
    if not len(rows):
        return
    model, tokenizer = load_base(cfg.model.name, cfg.model.revision)
    if not tokenizer.chat_template:
        raise DomaintuneError(f"data.augment.method=paraphrase needs a chat model; '{cfg.model.name}' has no "
                              "chat template")
    model.eval().to(device_name())
    prompt = PromptConfig(instruction=settings.instruction)  # the template's own system message
    copies = cfg.data.augment.copies if settings.temperature > 0 else 1  # greedy gives one answer per row
    clean = {**cfg.data.clean.model_dump(), "keep_newlines": cfg.data.format == "text"}
    batch_number = 0
    for chunk in rows.batches(_CHUNK):
        sources = [len(ids) for ids in tokenizer([r["text"] for r in chunk], add_special_tokens=False)["input_ids"]]
        usable = [i for i, n in enumerate(sources) if n <= settings.max_new_tokens]
        if len(usable) < len(chunk):
            rejected["source_too_long"] += len(chunk) - len(usable)
        prompts = {i: prompt_ids(tokenizer, prompt, chunk[i]["text"], sources[i] + 4096) for i in usable}
        made: dict[int, list[str]] = {i: [] for i in usable}
        usable.sort(key=lambda i: sources[i])  # similar lengths share a batch: less padding, one limit
        for start in range(0, len(usable), settings.batch_size):
            batch = usable[start:start + settings.batch_size]
            limits = {i: min(settings.max_new_tokens, math.ceil(settings.max_length_ratio * sources[i]) + _SLACK)
                      for i in batch}
            for _ in range(copies):
                if settings.temperature > 0:
                    import torch

                    torch.manual_seed(cfg.seed + batch_number)
                batch_number += 1
                outputs = generate_batch(model, tokenizer, [prompts[i] for i in batch], max(limits.values()),
                                         settings.temperature)
                for i, (ids, ended) in zip(batch, outputs, strict=True):
                    text = clean_text(tokenizer.decode(ids, skip_special_tokens=True), **clean)
                    fits = ended and len(ids) <= limits[i]
                    reason = _rejection(text, fits, chunk[i]["text"], made[i], cfg.data.dedup)
                    if reason:
                        rejected[reason] += 1
                    else:
                        made[i].append(text)
        for i in sorted(made):
            for k, text in enumerate(made[i], start=1):
                yield variant(chunk[i], k, text)


def _rejection(text: str, fits: bool, source: str, earlier: list[str], dedup: DedupConfig) -> str | None:
    if not text:
        return "empty"
    if not fits:
        return "too_long"
    if same_text(text, source) or any(same_text(text, other) for other in earlier):
        return "identical"
    mine, theirs = (shingles(t, dedup.shingle, dedup.word_ngram, dedup.char_ngram) for t in (text, source))
    if jaccard(mine, theirs) >= dedup.threshold:
        return "near_copy"
    return None
