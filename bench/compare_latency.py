"""Benchmark: does a merged LoRA serve at the base model's speed, what does an unmerged adapter cost,
and does `compare` repeat itself? Also exports the LoRA run to GGUF and reports the round-trip figures.

    PYTHONPATH=src python bench/compare_latency.py [--threads 2] [--runs 2] [--out runs/bench_compare] [--fresh] \
        [--classifier] [--no-export]

Trains a small LoRA run on the embedded model and data (a few steps: the weights only need to differ
from the base), evaluates base and run, then runs `compare` (base, LoRA unmerged, LoRA merged) `--runs`
times. Targets: merged p50 / base p50 = 1.00 +- 0.05; quality figures identical across runs; latency
medians within 10% across runs. With --classifier it also trains a `train.task=classification` LoRA
(same rows and steps) and compares it too: its rows are timed as one forward pass per request
(latency_kind classify), beside the 12-token generations. Writes OUT/bench_compare_latency.json and
prints a markdown summary with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from domaintune import demo_config, run_compare, run_evaluate, run_export, run_prepare, run_train
from domaintune.reporting.compare import LatencySettings

QUALITY = ("perplexity", "accuracy", "macro_f1", "general_perplexity", "per_class", "confusion_matrix", "samples")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--classifier", action="store_true", help="also compare a classification-head LoRA")
    parser.add_argument("--fresh", action="store_true", help="redo prepare, train and evaluate")
    parser.add_argument("--out", default="runs/bench_compare")
    args = parser.parse_args()
    root = Path(args.out)
    cfg = demo_config([
        f"data.output_dir={root}/prepared", f"train.output_dir={root}/lora", f"evaluate.base_output_dir={root}/base",
        "train.max_train_rows=32", "train.max_steps=4", "train.logging_steps=1", "evaluate.max_examples=40",
        "evaluate.samples=2", f"threads={args.threads}",
    ])
    run_dir = Path(cfg.train.output_dir)
    # Reuse what an earlier invocation finished (the timing is what this benchmark measures).
    if args.fresh or not (Path(cfg.data.output_dir) / "data_card.json").is_file():
        run_prepare(cfg)
    if args.fresh or not (Path(cfg.evaluate.base_output_dir) / "metrics.json").is_file():
        run_evaluate(cfg)
    if args.fresh or not (run_dir / "run_card.json").is_file():
        run_train(cfg)
    if args.fresh or not (run_dir / "metrics.json").is_file():
        run_evaluate(cfg, str(run_dir))
    folders, names = [cfg.evaluate.base_output_dir, run_dir], ["base", "lora"]
    if args.classifier:
        cls_cfg = cfg.model_copy(deep=True)
        cls_cfg.train.task, cls_cfg.train.output_dir = "classification", f"{root}/classifier"
        if args.fresh or not (Path(cls_cfg.train.output_dir) / "metrics.json").is_file():
            run_evaluate(cls_cfg, str(run_train(cls_cfg)))
        folders.append(cls_cfg.train.output_dir)
        names.append("classifier")
    settings = LatencySettings(prompts=args.prompts, max_new_tokens=args.max_new_tokens, warmup=2,
                               repeats=args.repeats)
    runs = []
    for i in range(args.runs):
        out = root / f"compare{i + 1}"
        run_compare(folders, out, names, settings, args.threads, log=lambda line: print(line, file=sys.stderr))
        runs.append({r["name"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]})

    timed = [n for n in runs[0] if runs[0][n].get("latency_p50_ms") is not None]
    summary: dict = {"settings": vars(args), "latency_settings": settings.__dict__, "runs": [],
                     "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    for rows in runs:
        summary["runs"].append({
            name: {k: rows[name].get(k) for k in ("latency_kind", "latency_p50_ms", "latency_p95_ms",
                                                  "requests_per_second", "generated_tokens_per_second",
                                                  "load_seconds", "rss_after_load_bytes", "weights_bytes")}
            | {"peak_rss_timed_bytes": rows[name].get("peak_rss_generating_bytes")
               or rows[name].get("peak_rss_classifying_bytes"),
               "p50_vs_base": rows[name].get("latency_vs_base")}  # None where the work differs (classify)
            for name in timed
        })
    first = runs[0]
    summary["quality_identical_across_runs"] = all(
        rows[n].get(k) == first[n].get(k) for rows in runs for n in first for k in QUALITY)
    summary["latency_median_spread_pct"] = {
        name: round((max(r[name]["latency_p50_ms"] for r in runs) / min(r[name]["latency_p50_ms"] for r in runs) - 1)
                    * 100, 2)
        for name in timed
    }
    if not args.no_export:
        out = run_export(run_dir, "gguf", root / "gguf")
        summary["gguf"] = json.loads((out / "export_card.json").read_text())["files"]
    (root / "bench_compare_latency.json").write_text(json.dumps(summary, indent=2))

    print(f"load average at the end: {summary['load_average_at_end']}")
    print("| run | model | latency kind | p50 ms | p95 ms | req/s | gen tok/s | p50 / base p50 | size | "
          "peak RSS while timed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, run in enumerate(summary["runs"], 1):
        for name, r in run.items():
            tokens = r["generated_tokens_per_second"]
            print(f"| {i} | {name} | {r['latency_kind']} | {r['latency_p50_ms']:.1f} | {r['latency_p95_ms']:.1f} | "
                  f"{r['requests_per_second']:.2f} | {'-' if tokens is None else f'{tokens:.1f}'} | "
                  f"{'-' if r['p50_vs_base'] is None else format(r['p50_vs_base'], '.3f')} | "
                  f"{r['weights_bytes'] / 2**20:.1f} MiB | "
                  f"{r['peak_rss_timed_bytes'] / 2**20:.0f} MiB |")
    print(f"\nquality identical across runs: {summary['quality_identical_across_runs']}")
    print(f"latency median spread across runs (%): {summary['latency_median_spread_pct']}")
    for name, f in summary.get("gguf", {}).items():
        print(f"{name}: {f['bytes'] / 2**20:.1f} MiB, max |logit diff| {f['max_abs_logit_diff']}, "
              f"mean |logit diff| {f['mean_abs_logit_diff']}, "
              f"top-1 agreement {f['top1_agreement']} over {f['positions_compared']} positions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
