"""Which class-imbalance option gets the rare class predicted: each run scored on its own val split.

Val, not test: the answer decides which option the recipes use (docs/tuning.md), and test is read once, by
the recipe that is chosen. Each run is scored by the rule `evaluate` uses on test (the head's argmax for a
classification head, each label's log-likelihood as the answer for SFT), with the run's own config.
Prints one markdown row per run: accuracy, macro-F1, how often each label was predicted against how often
it is gold, and each label's recall. Run:

    PYTHONPATH=src python bench/imbalance_val.py runs/cls-none runs/cls-balanced runs/sft runs/sft-sampler
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from domaintune.core.run_card import read_training_run_card
from domaintune.data.prepare import read_split
from domaintune.evaluation.metrics import classification_metrics
from domaintune.evaluation.scoring import score_labels
from domaintune.modeling.runs import load_run_model, run_config
from domaintune.modeling.seqcls import label_logits


def score_val(run: str) -> tuple[list[str], list[str], list[str], str]:
    cfg = run_config(run)
    card = read_training_run_card(run)
    val = read_split(cfg.data.output_dir, "val")
    texts, gold, labels = [r["text"] for r in val], [r["label"] for r in val], card.labels
    model, tokenizer = load_run_model(run, cfg)
    model.eval()
    ev = cfg.evaluate
    with torch.inference_mode():
        if card.task == "classification":
            scores = label_logits(model, tokenizer, texts, ev.max_length, ev.batch_size)
        else:
            scores = score_labels(model, tokenizer, cfg, texts, labels, ev.max_length, ev.batch_size)
    predicted = [labels[i] for i in scores.argmax(-1).tolist()]
    t = cfg.train
    option = (f"class_weights={t.class_weights}" if card.task == "classification"
              else f"balanced_sampler={str(t.balanced_sampler).lower()}")
    return gold, predicted, labels, f"{card.task}, {option}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        gold, predicted, labels, option = score_val(run)
        metrics = classification_metrics(gold, predicted, labels)
        made, truth = Counter(predicted), Counter(gold)
        counts = ", ".join(f"{label} {made[label]}/{truth[label]}" for label in labels)
        recalls = ", ".join(f"{label} {metrics['per_class'][label]['recall']:.2f}" for label in labels)
        rows.append(f"| {run} | {option} | {metrics['accuracy']:.3f} | {metrics['macro_f1']:.3f} | {counts} | "
                    f"{recalls} |")
    print("| run | option | val accuracy | val macro-F1 | predicted / gold | recall |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
