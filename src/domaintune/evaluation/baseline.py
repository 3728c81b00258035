"""A classic baseline: TF-IDF features + logistic regression on the same prepared splits.

It answers the first question of any domain adaptation: is a language model worth it at all here? Its
settings are chosen on val (baseline_search.py), so it is a baseline worth beating. The output folder
looks like a run folder (metrics.json with 95% intervals, predictions.jsonl, run_card.json with the
choice, config.yaml), so compare puts it beside the LLMs, paired tests included, without a special case.
The fitted pipeline is saved with skops (model.skops), which rebuilds only scikit-learn and numpy types
it trusts: nothing is ever unpickled.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import skops.io
from sklearn.pipeline import Pipeline
from skops.io.exceptions import UntrustedTypesFoundException

from domaintune.core.config import save_config
from domaintune.core.data_card import read_data_card
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json
from domaintune.core.outputs import check_output, config_inputs, staged_output
from domaintune.core.run_card import BASELINE_METHOD, BaselineCard, BaselineSelection, write_run_card
from domaintune.core.schema import Config
from domaintune.data.prepare import read_split
from domaintune.evaluation.baseline_search import (
    Selection,
    make_classifier,
    make_features,
    one_blas_thread,
    select_settings,
)
from domaintune.evaluation.metrics import classification_metrics
from domaintune.evaluation.predictions import Prediction, write_predictions
from domaintune.evaluation.uncertainty import intervals

METHOD = BASELINE_METHOD
MODEL_FILE = "model.skops"


def build_pipeline(seed: int, features: str, C: float, class_weight: str | None) -> Pipeline:
    """The pipeline of one setting (a candidate of baseline_search.py, or a run card's `selection`)."""
    return Pipeline([("tfidf", make_features(features)), ("logreg", make_classifier(C, class_weight, seed))])


def run_baseline(cfg: Config, overwrite: bool = False) -> dict:
    """Choose the settings on val, fit on the train split, score the test split; write the folder and return
    its metrics. Test is read only after the choice is made.

    An existing folder at `evaluate.baseline_output_dir` is replaced only if it is a baseline, or with
    `overwrite` (outputs.py).

    No peak memory is recorded: the process's peak (ru_maxrss) would be whatever ran before the fit
    in the same process (in `demo --compare`, two trainings), not the baseline's own few hundred MiB.
    """
    check_baseline_output(cfg, overwrite)
    labels = read_data_card(cfg.data.output_dir).labels
    if not labels:
        raise DomaintuneError(
            f"{cfg.data.output_dir}: the baseline needs labelled data (data.format=classification)"
        )
    train = read_split(cfg.data.output_dir, "train")[: cfg.train.max_train_rows]
    if len({r["label"] for r in train}) < 2:
        raise DomaintuneError(f"{cfg.data.output_dir}: the training split holds fewer than two labels")

    with one_blas_thread():
        started = time.perf_counter()
        selection = select_settings(train, read_split(cfg.data.output_dir, "val"), cfg.seed)
        selection_wall = time.perf_counter() - started
        pipeline = build_pipeline(cfg.seed, **selection.settings)
        started = time.perf_counter()
        pipeline.fit([r["text"] for r in train], [r["label"] for r in train])
        wall = time.perf_counter() - started
        test = read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]
        predictions = predict_test_rows(pipeline, test)
        latencies = request_latencies(pipeline, test)

    metrics: dict = {"target": METHOD, "base_model": None, "test_rows": len(test)}
    metrics.update(classification_metrics([p.gold for p in predictions], [p.predicted for p in predictions], labels))
    metrics.update(intervals(predictions, labels, cfg.evaluate.bootstrap_resamples, cfg.seed))
    metrics["bootstrap_resamples"] = cfg.evaluate.bootstrap_resamples
    metrics["latency_p50_ms"] = round(float(np.percentile(latencies, 50)), 3) if latencies else None
    metrics["latency_p95_ms"] = round(float(np.percentile(latencies, 95)), 3) if latencies else None
    metrics["requests_per_second"] = round(len(latencies) / (sum(latencies) / 1000), 2) if latencies else None
    blob = skops.io.dumps(pipeline)
    out = Path(cfg.evaluate.baseline_output_dir)
    with staged_output(out, "baseline", overwrite) as folder:
        (folder / MODEL_FILE).write_bytes(blob)
        atomic_write_json(folder / "metrics.json", metrics)
        write_predictions(folder, predictions)
        write_run_card(folder, run_card(pipeline, selection, len(train), len(blob),
                                                             wall, selection_wall))
        save_config(cfg, folder)
    return metrics


def request_latencies(pipeline: Pipeline, test: list[dict]) -> list[float]:
    """Milliseconds per test row predicted alone (latency kind tfidf-predict); the batch before warmed up."""
    latencies = []
    for row in test:
        tick = time.perf_counter()
        pipeline.predict([row["text"]])
        latencies.append((time.perf_counter() - tick) * 1000)
    return latencies


def predict_test_rows(pipeline: Pipeline, test: list[dict]) -> list[Prediction]:
    """One row per test example; label_scores are the model's log-probabilities of the labels it was
    fitted on (a label absent from train has none, rather than minus infinity, which JSON cannot hold)."""
    texts = [r["text"] for r in test]
    predicted = pipeline.predict(texts)
    log_probabilities = pipeline.predict_log_proba(texts)
    classes = [str(c) for c in pipeline.classes_]
    return [Prediction(set="test", id=row["id"], gold=row["label"], predicted=str(label),
                       label_scores={c: float(v) for c, v in zip(classes, scores, strict=True)})
            for row, label, scores in zip(test, predicted, log_probabilities, strict=True)]


def run_card(pipeline: Pipeline, selection: Selection, train_rows: int, weights_bytes: int, wall: float,
             selection_wall: float) -> BaselineCard:
    logreg = pipeline.named_steps["logreg"]
    parameters = int(logreg.coef_.size + logreg.intercept_.size)
    return BaselineCard(
        method=METHOD,
        base_model=None,
        train_rows=train_rows,
        vocabulary_size=len(pipeline.named_steps["tfidf"].get_feature_names_out()),
        train_wall_seconds=round(wall, 3),
        selection_wall_seconds=round(selection_wall, 3),
        selection=BaselineSelection(**selection.card()),
        trainable_parameters=parameters,
        total_parameters=parameters,
        weights_bytes=weights_bytes,
    )


def check_baseline_output(cfg: Config, overwrite: bool = False) -> Path:
    return check_output(cfg.evaluate.baseline_output_dir, "baseline", [*config_inputs(cfg), cfg.data.output_dir],
                        overwrite, "evaluate.baseline_output_dir")


def load_baseline(folder: str | Path) -> Pipeline:
    """The fitted pipeline of a baseline folder; a file holding any type skops does not trust is refused."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise DomaintuneError(f"{folder}: {MODEL_FILE} is missing; run `domaintune baseline` again")
    try:
        return skops.io.load(path)  # trusted=None: only the types skops trusts by default are rebuilt
    except UntrustedTypesFoundException as exc:
        raise DomaintuneError(f"{path}: refused, it holds types skops does not trust: {exc}") from None
