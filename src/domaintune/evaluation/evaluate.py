"""Stage 3, evaluate: a run folder (or the base model) on the test split -> metrics.json, predictions.jsonl.

Perplexity is token-weighted over the test documents' own text, each document read whole in overlapping
windows (perplexity.py; padding and each document's first token, which has no context, are not counted).
Labelled data is also classified by scoring each label's log-likelihood as the assistant's answer, so
base and adapted models are judged by the same rule. Every figure comes with its 95% bootstrap interval
over the examples (uncertainty.py), and each example's score is kept in predictions.jsonl for compare's
paired tests.

Forgetting is measured as perplexity on general English passages (`evaluate.general_text`, by default
data/general_text.txt shipped in the package). We chose this over a KL divergence from the base model
because it needs only the model being evaluated (a full fine-tune would otherwise need the base in
memory beside it), it is defined for the base itself, and the number reads the same way as the domain
perplexity: compare shows its change against the base as the price paid in general ability.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from domaintune.core.config import save_config
from domaintune.core.data_card import DataCard, read_data_card
from domaintune.core.errors import DomaintuneError, warn
from domaintune.core.io import atomic_write_json
from domaintune.core.outputs import check_output, config_inputs, staged_output
from domaintune.core.process import config_threads
from domaintune.core.run_card import read_training_run_card
from domaintune.core.schema import Config
from domaintune.data.card import leak_warning
from domaintune.data.prepare import read_split
from domaintune.evaluation.metrics import classification_metrics, perplexity_metrics
from domaintune.evaluation.perplexity import DocumentLosses, text_losses
from domaintune.evaluation.predictions import Prediction, write_predictions
from domaintune.evaluation.scoring import generation_samples, score_labels
from domaintune.evaluation.uncertainty import intervals
from domaintune.modeling.runs import BASE, load_run_model, run_config
from domaintune.modeling.seqcls import label_logits


@config_threads
def run_evaluate(cfg: Config, target: str = BASE, overwrite: bool = False) -> dict:
    """Evaluate `target` (a run folder, or "base" for `cfg.model`) and write its metrics.json.

    A run's metrics.json goes into the run folder; the base model's into `evaluate.base_output_dir`, an
    existing folder there being replaced only if it is a base evaluation, or with `overwrite` (outputs.py).
    """
    if target == BASE:
        check_base_output(cfg, overwrite)
    model_cfg = cfg if target == BASE else run_config(target)
    data_card = read_data_card(cfg.data.output_dir)
    check_data(target, data_card, cfg.data.output_dir)
    model, tokenizer = load_run_model(target, cfg)
    classifier = target != BASE and model_cfg.train.task == "classification"
    # The data and settings are kept so that compare can evaluate a merged LoRA exactly as its run was.
    metrics: dict = {"target": target, "base_model": model_cfg.model.name,
                     "data_fingerprint": data_card.fingerprint, "data_dir": cfg.data.output_dir,
                     "evaluate_settings": cfg.evaluate.model_dump(mode="json")}
    figures, predictions = evaluate_with_predictions(model, tokenizer, cfg, model_cfg, data_card.labels,
                                                     classifier)
    metrics.update(figures)
    if target != BASE:
        # predictions.jsonl first: a metrics.json beside it then always has its examples.
        write_predictions(target, predictions)
        atomic_write_json(Path(target) / "metrics.json", metrics)
        return metrics
    with staged_output(cfg.evaluate.base_output_dir, "evaluation", overwrite) as folder:
        write_predictions(folder, predictions)
        atomic_write_json(folder / "metrics.json", metrics)
        save_config(cfg, folder)
    return metrics


def evaluate_model(model, tokenizer, cfg: Config, model_cfg: Config, labels: list[str] | None,
                   classifier: bool) -> dict:
    """The figures of one loaded model on the test split of `cfg.data` (evaluate_with_predictions)."""
    return evaluate_with_predictions(model, tokenizer, cfg, model_cfg, labels, classifier)[0]


def evaluate_with_predictions(model, tokenizer, cfg: Config, model_cfg: Config, labels: list[str] | None,
                              classifier: bool) -> tuple[dict, list[Prediction]]:
    """The figures of one loaded model on the test split of `cfg.data`, by `cfg.evaluate`, each with its
    95% bootstrap interval, and the per-example rows they come from; `model_cfg` is the config the model
    was trained with (its prompt)."""
    model.eval()
    ev = cfg.evaluate
    rows = read_split(cfg.data.output_dir, "test")[: ev.max_examples]
    started = time.perf_counter()
    metrics: dict = {"test_rows": len(rows)}
    texts = [r["text"] for r in rows]
    test = [Prediction("test", str(r["id"]), gold=r["label"] if labels else None) for r in rows]
    general: list[Prediction] = []
    if classifier:
        # A classification head has no language-model loss: it is judged by its predictions alone.
        scores = label_logits(model, tokenizer, texts, ev.max_length, ev.batch_size)
        metrics.update(classification_metrics(*with_label_scores(test, scores, labels), labels))
    else:
        metrics.update(with_losses(test, text_losses(model, tokenizer, texts, ev.max_length, ev.batch_size,
                                                     ev.window_stride, ev.perplexity_scope)))
        if labels and tokenizer.chat_template:
            scores = score_labels(model, tokenizer, model_cfg, texts, labels, ev.max_length, ev.batch_size)
            metrics.update(classification_metrics(*with_label_scores(test, scores, labels), labels))
        elif labels:
            warn(f"tokenizer of '{model_cfg.model.name}' has no chat template, so labels are not scored as "
                 "answers (no accuracy/macro-F1); see docs/troubleshooting.md#no-chat-template", once=True)
        passages = general_passages(ev.general_text)
        if passages:
            general = [Prediction("general", f"general-{i}") for i in range(len(passages))]
            scored = with_losses(general, text_losses(model, tokenizer, passages, ev.max_length, ev.batch_size,
                                                      ev.window_stride, ev.perplexity_scope))
            metrics["general_text"] = ev.general_text or "domaintune:data/general_text.txt"
            metrics.update({f"general_{key}": scored[key]
                            for key in ("perplexity", "tokens_scored", "tokens_in_split")})
        metrics["samples"] = generation_samples(model, tokenizer, model_cfg, rows[: ev.samples], ev.max_length,
                                                ev.sample_max_new_tokens)
    # The intervals are additive: each figure above stays the observed one; the bootstrap only brackets it.
    metrics.update(intervals(test, labels, ev.bootstrap_resamples, cfg.seed))
    metrics.update({f"general_{key}": value
                    for key, value in intervals(general, None, ev.bootstrap_resamples, cfg.seed).items()})
    metrics["bootstrap_resamples"] = ev.bootstrap_resamples
    metrics["eval_seconds"] = round(time.perf_counter() - started, 2)
    return metrics, test + general


def with_label_scores(rows: list[Prediction], scores, labels: list[str]) -> tuple[list[str], list[str]]:
    """Fills each row's label scores and prediction (the argmax) from a (rows, labels) matrix; returns
    (gold, predicted)."""
    for row, values, best in zip(rows, scores.tolist(), scores.argmax(-1).tolist(), strict=True):
        row.label_scores = dict(zip(labels, values, strict=True))
        row.predicted = labels[best]
    return [row.gold for row in rows], [row.predicted for row in rows]


def with_losses(rows: list[Prediction], losses: DocumentLosses) -> dict:
    """Fills each row's summed NLL and scored tokens; returns the perplexity figures they make."""
    for row, nll, tokens in zip(rows, losses.nll, losses.tokens, strict=True):
        row.nll, row.tokens = nll, tokens
    return perplexity_metrics(losses.nll, losses.tokens, losses.lengths)


def check_base_output(cfg: Config, overwrite: bool = False) -> Path:
    inputs = [*config_inputs(cfg), cfg.data.output_dir, cfg.evaluate.general_text or None]
    return check_output(cfg.evaluate.base_output_dir, "evaluation", inputs, overwrite, "evaluate.base_output_dir")


def check_data(target: str, data_card: DataCard, data_dir: str) -> None:
    """Test figures that would mislead: kept leaks (warned), a run evaluated on other prepared data than
    it was trained on (warned: its test split may hold the run's training rows), and a classification
    head meeting other labels (an error: its outputs would be named wrongly)."""
    if leak_warning(data_card):
        warn(f"{data_dir}: {leak_warning(data_card)}", once=True)
    if target == BASE:
        return
    card = read_training_run_card(target)
    if card.task == "classification" and card.labels != data_card.labels:
        raise DomaintuneError(
            f"{target} was trained with labels {card.labels}, but {data_dir} holds {data_card.labels}: "
            "evaluate on the data it was trained on; see docs/troubleshooting.md#evaluated-on-other-data"
        )
    if card.data_fingerprint != data_card.fingerprint:
        warn(f"{target} was trained on prepared data {card.data_fingerprint}, but {data_dir} holds "
             f"{data_card.fingerprint}: its test rows may include rows the run trained on; "
             "see docs/troubleshooting.md#evaluated-on-other-data")


def general_passages(setting: str | None) -> list[str]:
    """The forgetting set: the shipped passages when unset, none for "", else the user's file."""
    if setting == "":
        return []
    if setting is None:
        text = resources.files("domaintune").joinpath("data/general_text.txt").read_text(encoding="utf-8")
    else:
        path = Path(setting)
        if not path.is_file():
            raise DomaintuneError(f"evaluate.general_text: file not found: {path}")
        text = path.read_text(encoding="utf-8")
    passages = [line.strip() for line in text.splitlines() if line.strip()]
    if setting is not None and not passages:
        raise DomaintuneError(f"evaluate.general_text: {setting} holds no text")
    return passages
