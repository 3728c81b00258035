"""The Trainer for labelled data: val scored by the task's own rule, and the sampler the run asks for.

Every evaluation during training adds `eval_accuracy` and `eval_macro_f1` to the val loss, computed as
`evaluate` computes them on test: the head's predictions for a classification head (seqcls.label_logits),
each label's log-likelihood as the answer for SFT (scoring.score_labels). They then reach the log
(metrics.jsonl, TensorBoard), the best-checkpoint choice and early stopping like the loss does, which is
what `train.select_by` picks from.

Trainer takes neither through an argument (compute_metrics sees only gathered logits, which for a causal
LM are GBs and not the scoring rule), so this subclass overrides two of its documented extension points.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Sampler
from transformers import PreTrainedTokenizerBase, Trainer

from domaintune.core.schema import Config
from domaintune.evaluation.metrics import classification_metrics
from domaintune.evaluation.scoring import score_labels
from domaintune.modeling.seqcls import label_logits

LABEL_METRICS = ("accuracy", "macro_f1")


def metric_for_best_model(select_by: str) -> tuple[str, bool]:
    """The Trainer's metric name for `train.select_by` and whether greater is better."""
    name = select_by.removeprefix("val_")
    return f"eval_{name}", name in LABEL_METRICS


class TaskTrainer(Trainer):
    """`val_predictor(model) -> predicted labels of the val rows` adds label metrics to each evaluation;
    `train_sampler` replaces the sampler `train.sampling` would choose."""

    def __init__(self, *args, val_predictor: Callable | None = None, val_gold: list[str] | None = None,
                 labels: list[str] | None = None, train_sampler: Sampler | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.val_predictor, self.val_gold, self.labels = val_predictor, val_gold, labels
        self.train_sampler = train_sampler

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        prefix = metric_key_prefix
        if self.val_predictor is not None and prefix == "eval":
            was_training = self.model.training
            self.model.eval()
            scores = classification_metrics(self.val_gold, self.val_predictor(self.model), self.labels)
            self.model.train(was_training)
            output.metrics.update({f"{prefix}_{name}": scores[name] for name in LABEL_METRICS})
        return output

    def _get_train_sampler(self, train_dataset=None):
        return self.train_sampler if self.train_sampler is not None else super()._get_train_sampler(train_dataset)


def val_predictor(cfg: Config, tokenizer: PreTrainedTokenizerBase, val_rows: list[dict],
                  labels: list[str]) -> Callable:
    """The val rows' predicted labels for a model, by the rule and settings `evaluate` uses on test."""
    texts, ev = [row["text"] for row in val_rows], cfg.evaluate
    if cfg.train.task == "classification":
        def scores(model):
            return label_logits(model, tokenizer, texts, ev.max_length, ev.batch_size)
    else:
        def scores(model):
            return score_labels(model, tokenizer, cfg, texts, labels, ev.max_length, ev.batch_size)
    # The head's logits come in the head's label order, which is `labels` (seqcls builds it so), as evaluate assumes.
    return lambda model: [labels[i] for i in scores(model).argmax(-1).tolist()]
