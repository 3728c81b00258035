"""Stage 4, compare: evaluated folders (+ their run cards, + measured inference cost) -> one report.

Each folder becomes one row per way of serving it: the base model, a full fine-tune, a LoRA run both
unmerged (adapter on the base) and merged (one plain model), and the TF-IDF baseline. Quality comes
from metrics.json; a merged LoRA is written by `domaintune merge` and that folder is evaluated itself,
on the test rows and with the settings its run was evaluated with (merging rounds the weights, and a
broken merge must show). The training cost comes from run_card.json, and the inference cost from
`latency.measure`, run in a fresh process per row (a merged LoRA served from its merged folder).
Each row says what its latency measures (`latency_kind`: generate, classify or tfidf-predict); the
tables carry a note per kind, since a classifier's forward pass is no 16-token generation.
Each model is tested against the base and the TF-IDF baseline on the same examples (paired.py), and
rows for always-the-majority and the label prior come from the prepared data (references.py). With a
feedback database, the review page's win rates join the report (evaluation/win_rates.py).
Outputs: comparison.json (every figure), report.md, report.html (self-contained).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from pydantic import Field

from domaintune.core.config import load_config
from domaintune.core.data_card import read_data_card
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json, atomic_write_text, read_json
from domaintune.core.outputs import check_output, staged_output
from domaintune.core.run_card import BASELINE_METHOD, read_run_card
from domaintune.core.schema import EvaluateConfig, Settings
from domaintune.data.prepare import read_split
from domaintune.evaluation.win_rates import pair_results, read_votes
from domaintune.modeling.methods import saved_as
from domaintune.modeling.models import resolve_model
from domaintune.modeling.runs import run_config
from domaintune.reporting.latency import measure_in_subprocess
from domaintune.reporting.markdown import render_markdown
from domaintune.reporting.paired import paired_comparisons
from domaintune.reporting.references import reference_rows

QUALITY_KEYS = ("perplexity", "test_loss", "accuracy", "macro_f1", "general_perplexity", "per_class",
                "confusion_matrix", "samples", "test_rows", "latency_p50_ms", "latency_p95_ms",
                "requests_per_second", "perplexity_ci", "accuracy_ci", "macro_f1_ci", "general_perplexity_ci",
                "tokens_in_split")
CARD_KEYS = ("task", "labels", "trainable_parameters", "total_parameters", "weights_bytes", "train_wall_seconds",
             "train_tokens_per_second", "steps", "train_tokens")

class LatencySettings(Settings):
    """How `compare` times each model (its flags; the models' own configs come from their folders)."""

    prompts: int = Field(8, ge=1, description="The first test rows, rendered as the task's prompt, timed per model.")
    max_new_tokens: int = Field(16, ge=1, description="Tokens generated per request.")
    warmup: int = Field(2, ge=0, description="Untimed requests before timing.")
    repeats: int = Field(1, ge=1, description="Passes over the timed prompts.")
    max_length: int = Field(160, ge=1, description="Prompt tokens kept per request.")


def read_folder(folder: str | Path, name: str | None = None) -> dict:
    """The evaluated figures of one folder, checked: a clear error names what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DomaintuneError(f"{folder}: folder not found")
    if not (folder / "metrics.json").is_file():
        raise DomaintuneError(f"{folder}: metrics.json is missing; run `domaintune evaluate {folder}` first; "
                              "see docs/troubleshooting.md#stage-order")
    if not (folder / "config.yaml").is_file():
        raise DomaintuneError(f"{folder}: config.yaml is missing; the folder is incomplete")
    metrics = read_json(folder / "metrics.json")
    row: dict = {"name": name or folder.name, "folder": str(folder), "base_model": metrics.get("base_model"),
                 "data_dir": metrics.get("data_dir"), "data_fingerprint": metrics.get("data_fingerprint")}
    row.update({k: metrics[k] for k in QUALITY_KEYS if k in metrics})
    if (folder / "run_card.json").is_file():
        card = read_run_card(folder)
        row["method"] = card.method
        if card.method == BASELINE_METHOD and row.get("latency_p50_ms") is not None:
            row["latency_kind"] = "tfidf-predict"
        # a baseline's card has none of the training figures (task, steps, tokens, peak memory): None in the table
        row.update({k: getattr(card, k, None) for k in CARD_KEYS})
        row["peak_train_rss_bytes"] = getattr(card, "peak_rss_bytes", None)
        if saved_as(row["method"]):
            from domaintune.modeling.runs import weights_dir  # checks adapter/ or model/ is complete

            weights_dir(folder)
    elif metrics.get("target") == "base":
        row.update({"method": "base", "trainable_parameters": 0})
        row["weights_bytes"] = model_bytes(row["base_model"])
    else:
        raise DomaintuneError(f"{folder}: run_card.json is missing; it is neither a run folder nor runs/base")
    return row


def model_bytes(model_name: str) -> int | None:
    """Size of a model's safetensors files (a merged causal-LM LoRA has exactly its base's tensors)."""
    return sum(f.stat().st_size for f in Path(resolve_model(model_name)).glob("*.safetensors")) or None


def merged_weights_bytes(row: dict) -> int | None:
    """Size of what `domaintune merge` writes for the row's run, without writing it.

    A causal LM merges into its base's tensors. A classifier merges into the base's
    sequence-classification model (its head included, the LM head dropped): its float32 tensors are
    counted on an empty (meta-device) copy; the file adds only its header of a few KiB.
    """
    if row.get("task") != "classification":
        return model_bytes(row["base_model"])
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(resolve_model(row["base_model"]), num_labels=len(row["labels"]))
    with init_empty_weights():
        skeleton = AutoModelForSequenceClassification.from_config(config)
    return sum(p.numel() for p in skeleton.parameters()) * torch.float32.itemsize


def check_same_base(rows: list[dict]) -> None:
    llm = [r for r in rows if serving_kind(r["method"]) in ("base", "lora", "full")]
    for row in llm[1:]:
        if row["base_model"] != llm[0]["base_model"]:
            raise DomaintuneError(
                f"{row['folder']}: trained from base model '{row['base_model']}', but {llm[0]['folder']} "
                f"uses '{llm[0]['base_model']}'; compare runs of one base model"
            )


def serving_kind(method: str) -> str:
    """`lora` for any run that saves an adapter (LoRA, DoRA, PiSSA, DPO, ...), `full` for any that saves a
    whole model (full, freeze); other folders (base, tfidf-logreg) keep their method."""
    return {"adapter": "lora", "model": "full"}.get(saved_as(method), method)


def serving_rows(row: dict) -> list[dict]:
    """One row per way of serving the folder; an adapter run is served unmerged and merged."""
    if serving_kind(row["method"]) != "lora":
        return [dict(row, variant=serving_kind(row["method"]))]
    merged_parameters = (row["total_parameters"] - row["trainable_parameters"]
                         if row.get("total_parameters") is not None else None)  # the adapter folds in
    unevaluated = {k: v for k, v in row.items() if k not in QUALITY_KEYS}  # filled by `merged_quality`
    merged = dict(unevaluated, variant="lora-merged", name=f"{row['name']}-merged", trainable_parameters=0,
                  total_parameters=merged_parameters, weights_bytes=merged_weights_bytes(row))
    return [dict(row, variant="lora"), merged]


def merge_and_evaluate(rows: list[dict], work_dir: Path, log) -> dict[int, tuple[Path, float]]:
    """Write each merged row's folder as `domaintune merge` does and evaluate it; per row index, the
    folder and the seconds the merge took (load, merge, save)."""
    from domaintune.export.merge import run_merge

    merged = {}
    for i, row in enumerate(rows):
        if row["variant"] == "lora-merged":
            log(f"merging {row['folder']} and evaluating the merged model")
            tick = time.perf_counter()
            folder = run_merge(row["folder"], work_dir / str(i))
            merged[i] = folder, round(time.perf_counter() - tick, 3)
            row.update(merged_quality(row, folder))
    return merged


def merged_quality(row: dict, merged_dir: Path) -> dict:
    """The quality figures of a merged folder, evaluated on the data and with the settings that the run's
    own metrics.json was evaluated with."""
    from domaintune.evaluation.evaluate import evaluate_model
    from domaintune.export.merge import load_merged

    folder = row["folder"]
    metrics = read_json(Path(folder) / "metrics.json")
    if "evaluate_settings" not in metrics:
        raise DomaintuneError(f"{folder}: metrics.json does not record how the run was evaluated (an older "
                              f"domaintune wrote it); run `domaintune evaluate {folder}` again")
    run_cfg = run_config(folder)
    cfg = run_cfg.model_copy(deep=True)
    cfg.data.output_dir = metrics["data_dir"]
    cfg.evaluate = EvaluateConfig.model_validate(metrics["evaluate_settings"])
    data_card = read_data_card(cfg.data.output_dir)
    if data_card.fingerprint != metrics["data_fingerprint"]:
        raise DomaintuneError(f"{folder} was evaluated on prepared data {metrics['data_fingerprint']}, but "
                              f"{cfg.data.output_dir} now holds {data_card.fingerprint}; run "
                              f"`domaintune evaluate {folder}` again")
    classifier = row.get("task") == "classification"
    model, tokenizer = load_merged(merged_dir, row["labels"] if classifier else None)
    figures = evaluate_model(model, tokenizer, cfg, run_cfg, data_card.labels, classifier)
    return {k: figures[k] for k in QUALITY_KEYS if k in figures}


def latency_texts(rows: list[dict], settings: LatencySettings) -> list[str]:
    cfg = load_config(Path(rows[0]["folder"]) / "config.yaml")
    texts = [r["text"] for r in read_split(cfg.data.output_dir, "test")[: settings.prompts]]
    if not texts:
        raise DomaintuneError(f"{cfg.data.output_dir}: no test rows to time generation on")
    return texts


def measure_row(row: dict, texts: list[str], settings: LatencySettings, work_dir: Path,
                threads: int | None, merged: tuple[Path, float] | None = None) -> dict:
    """Time the row in a fresh process; a merged row is served from its merged folder (`merged`: that
    folder and the merge's seconds)."""
    cfg = load_config(Path(row["folder"]) / "config.yaml", [f"threads={threads}"] if threads else [])
    spec = {"target": "base" if row["method"] == "base" else row["folder"], "variant": row["variant"],
            "task": row.get("task"), "config": cfg.model_dump(mode="json"), "texts": texts, **settings.model_dump()}
    if merged is None:
        return measure_in_subprocess(spec, work_dir)
    spec["merged_dir"] = str(merged[0])
    return measure_in_subprocess(spec, work_dir) | {"merge_seconds": merged[1]}


def run_compare(
    folders: list[str | Path],
    output_dir: str | Path,
    names: list[str] | None = None,
    latency: LatencySettings | None = None,
    threads: int | None = None,
    log=lambda line: None,
    overwrite: bool = False,
    feedback: str | Path | None = None,
) -> Path:
    """Write comparison.json, report.md and report.html for the folders; returns the HTML report's path.

    An existing `output_dir` is replaced only if it is a comparison, or with `overwrite` (outputs.py).
    `feedback`: a review database (`domaintune serve`'s feedback.sqlite) whose win rates join the report.
    """
    if not folders:
        raise DomaintuneError("compare needs at least one evaluated folder (a run folder or runs/base)")
    if names and len(names) != len(folders):
        raise DomaintuneError(f"compare got {len(names)} names for {len(folders)} folders")
    check_compare_output(folders, output_dir, overwrite)
    folder_rows = [read_folder(f, names[i] if names else None) for i, f in enumerate(folders)]
    check_same_base(folder_rows)
    rows = [r for row in folder_rows for r in serving_rows(row)]
    votes = {"database": str(feedback), "pairs": pair_results(read_votes(feedback))} if feedback else None
    from domaintune.reporting.html import render_html

    with staged_output(output_dir, "compare", overwrite) as folder:
        merged = merge_and_evaluate(rows, folder / ".merged", log)
        texts: list[str] = []
        if latency is not None and any(r["variant"] != "tfidf-logreg" for r in rows):
            texts = latency_texts([r for r in rows if r["variant"] != "tfidf-logreg"], latency)
            for i, row in enumerate(rows):
                if row["variant"] in ("base", "full", "lora", "lora-merged"):
                    log(f"timing {row['name']} ({row['variant']}) in a fresh process")
                    row.update(measure_row(row, texts, latency, folder / ".latency", threads, merged.get(i)))
                    if row["variant"] == "base":
                        row["total_parameters"] = row["inference_parameters"]
            shutil.rmtree(folder / ".latency", ignore_errors=True)
        shutil.rmtree(folder / ".merged", ignore_errors=True)
        add_relative_figures(rows)
        paired, paired_notes = paired_comparisons(rows)
        references, reference_notes = reference_rows(rows)
        report = {"rows": rows, "reference_rows": references, "paired_tests": paired,
                  "notes": paired_notes + reference_notes, "feedback": votes,
                  "latency_settings": latency.model_dump() if latency else None, "latency_texts": texts,
                  "loss_curves": {r["name"]: loss_curve(r["folder"]) for r in rows
                                  if r["variant"] in ("lora", "full")}}
        atomic_write_json(folder / "comparison.json", report)
        atomic_write_text(folder / "report.md", render_markdown(report))
        atomic_write_text(folder / "report.html", render_html(report))
    return Path(output_dir) / "report.html"


def check_compare_output(folders: list[str | Path], output_dir: str | Path, overwrite: bool = False) -> Path:
    return check_output(output_dir, "compare", folders, overwrite, "--out")


def loss_curve(folder: str) -> list[dict]:
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"step": r["step"], "loss": r["loss"]} for r in records if "loss" in r and "step" in r]


def add_relative_figures(rows: list[dict]) -> None:
    """Changes against the base row: domain gain and general-text forgetting, in percent."""
    base = next((r for r in rows if r["variant"] == "base"), None)
    if base is None:
        return
    for row in rows:
        for key, out in (("perplexity", "perplexity_change_pct"), ("general_perplexity", "forgetting_pct")):
            if row.get(key) is not None and base.get(key):
                row[out] = round((row[key] / base[key] - 1) * 100, 2)
        same_work = row.get("latency_kind") == base.get("latency_kind")  # a forward pass is no generation
        if row.get("latency_p50_ms") is not None and base.get("latency_p50_ms") and same_work:
            row["latency_vs_base"] = round(row["latency_p50_ms"] / base["latency_p50_ms"], 3)
