"""A classic baseline: TF-IDF features + logistic regression on the same prepared splits.

It answers the first question of any domain adaptation: is a language model worth it at all here?
The output folder looks like a run folder (metrics.json, run_card.json, config.yaml), so compare puts
it beside the LLMs without a special case. The fitted pipeline is saved with skops (model.skops), which
rebuilds only scikit-learn and numpy types it trusts: nothing is ever unpickled.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import skops.io
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from skops.io.exceptions import UntrustedTypesFoundException

from domaintune.core.config import save_config
from domaintune.core.data_card import read_data_card
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json
from domaintune.core.outputs import check_output, config_inputs, staged_output
from domaintune.core.run_card import BASELINE_METHOD, BaselineCard, write_run_card
from domaintune.core.schema import Config
from domaintune.data.prepare import read_split
from domaintune.evaluation.metrics import classification_metrics

METHOD = BASELINE_METHOD
MODEL_FILE = "model.skops"


def build_pipeline(seed: int) -> Pipeline:
    return Pipeline([
        # Word uni- and bigrams with sublinear term frequency: the usual strong setting for reviews.
        ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
        ("logreg", LogisticRegression(max_iter=2000, C=4.0, random_state=seed)),
    ])


def run_baseline(cfg: Config, overwrite: bool = False) -> dict:
    """Fit on the train split, score the test split; write the folder and return its metrics.

    An existing folder at `evaluate.baseline_output_dir` is replaced only if it is a baseline, or with
    `overwrite` (outputs.py).

    No peak memory is recorded: the process's peak (ru_maxrss) would be whatever ran before the fit
    in the same process (in `demo --compare`, two trainings), not the baseline's own few MiB.
    """
    check_baseline_output(cfg, overwrite)
    labels = read_data_card(cfg.data.output_dir).labels
    if not labels:
        raise DomaintuneError(
            f"{cfg.data.output_dir}: the baseline needs labelled data (data.format=classification)"
        )
    train = read_split(cfg.data.output_dir, "train")[: cfg.train.max_train_rows]
    test = read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]
    if len({r["label"] for r in train}) < 2:
        raise DomaintuneError(f"{cfg.data.output_dir}: the training split holds fewer than two labels")

    pipeline = build_pipeline(cfg.seed)
    started = time.perf_counter()
    pipeline.fit([r["text"] for r in train], [r["label"] for r in train])
    wall = time.perf_counter() - started
    predicted = list(pipeline.predict([r["text"] for r in test]))
    latencies = []
    for row in test:  # one request at a time (latency kind tfidf-predict); the batch above was the warm-up
        tick = time.perf_counter()
        pipeline.predict([row["text"]])
        latencies.append((time.perf_counter() - tick) * 1000)

    metrics: dict = {"target": METHOD, "base_model": None, "test_rows": len(test)}
    metrics.update(classification_metrics([r["label"] for r in test], predicted, labels))
    metrics["latency_p50_ms"] = round(float(np.percentile(latencies, 50)), 3) if latencies else None
    metrics["latency_p95_ms"] = round(float(np.percentile(latencies, 95)), 3) if latencies else None
    metrics["requests_per_second"] = round(len(latencies) / (sum(latencies) / 1000), 2) if latencies else None
    logreg = pipeline.named_steps["logreg"]
    parameters = int(logreg.coef_.size + logreg.intercept_.size)
    blob = skops.io.dumps(pipeline)
    out = Path(cfg.evaluate.baseline_output_dir)
    with staged_output(out, "baseline", overwrite) as folder:
        (folder / MODEL_FILE).write_bytes(blob)
        atomic_write_json(folder / "metrics.json", metrics)
        write_run_card(folder, BaselineCard(
            method=METHOD,
            base_model=None,
            train_rows=len(train),
            vocabulary_size=len(pipeline.named_steps["tfidf"].vocabulary_),
            train_wall_seconds=round(wall, 3),
            trainable_parameters=parameters,
            total_parameters=parameters,
            weights_bytes=len(blob),
        ))
        save_config(cfg, folder)
    return metrics


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
