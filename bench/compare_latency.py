"""Benchmark: does a merged LoRA serve at the base model's speed, what does an unmerged adapter cost,
and does `compare` repeat itself? Also exports the LoRA run to GGUF and reports the round-trip figures.

    PYTHONPATH=src python bench/compare_latency.py [--threads 2] [--runs 2] [--out runs/bench_compare] [--fresh]

Trains a small LoRA run on the embedded model and data (a few steps: the weights only need to differ
from the base), evaluates base and run, then runs `compare` (base, LoRA unmerged, LoRA merged) `--runs`
times. Targets: merged p50 / base p50 = 1.00 +- 0.05; quality figures identical across runs; latency
medians within 10% across runs. Writes OUT/bench_compare_latency.json and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from domaintune import demo_config, run_compare, run_evaluate, run_export, run_prepare, run_train
from domaintune.compare import LatencySettings

QUALITY = ("perplexity", "accuracy", "macro_f1", "general_perplexity", "per_class", "confusion_matrix", "samples")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-export", action="store_true")
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
    settings = LatencySettings(prompts=args.prompts, max_new_tokens=args.max_new_tokens, warmup=2,
                               repeats=args.repeats)
    runs = []
    for i in range(args.runs):
        out = root / f"compare{i + 1}"
        run_compare([cfg.evaluate.base_output_dir, run_dir], out, ["base", "lora"], settings, args.threads,
                    log=lambda line: print(line, file=sys.stderr))
        runs.append({r["name"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]})

    summary: dict = {"settings": vars(args), "latency_settings": settings.__dict__, "runs": []}
    for rows in runs:
        base = rows["base"]["latency_p50_ms"]
        summary["runs"].append({
            name: {k: rows[name].get(k) for k in ("latency_p50_ms", "latency_p95_ms", "generated_tokens_per_second",
                                                  "load_seconds", "rss_after_load_bytes",
                                                  "peak_rss_generating_bytes")}
            | {"p50_vs_base": round(rows[name]["latency_p50_ms"] / base, 3)}
            for name in ("base", "lora", "lora-merged")
        })
    first = runs[0]
    summary["quality_identical_across_runs"] = all(
        rows[n].get(k) == first[n].get(k) for rows in runs for n in first for k in QUALITY)
    summary["latency_median_spread_pct"] = {
        name: round((max(r[name]["latency_p50_ms"] for r in runs) / min(r[name]["latency_p50_ms"] for r in runs) - 1)
                    * 100, 2)
        for name in ("base", "lora", "lora-merged")
    }
    if not args.no_export:
        out = run_export(run_dir, "gguf", root / "gguf")
        summary["gguf"] = json.loads((out / "export_card.json").read_text())["files"]
    (root / "bench_compare_latency.json").write_text(json.dumps(summary, indent=2))

    print("| run | model | p50 ms | p95 ms | gen tok/s | p50 / base p50 | peak RSS generating |")
    print("|---|---|---|---|---|---|---|")
    for i, run in enumerate(summary["runs"], 1):
        for name, r in run.items():
            print(f"| {i} | {name} | {r['latency_p50_ms']:.1f} | {r['latency_p95_ms']:.1f} | "
                  f"{r['generated_tokens_per_second']:.1f} | {r['p50_vs_base']:.3f} | "
                  f"{r['peak_rss_generating_bytes'] / 2**20:.0f} MiB |")
    print(f"\nquality identical across runs: {summary['quality_identical_across_runs']}")
    print(f"latency median spread across runs (%): {summary['latency_median_spread_pct']}")
    for name, f in summary.get("gguf", {}).items():
        print(f"{name}: {f['bytes'] / 2**20:.1f} MiB, max |logit diff| {f['max_abs_logit_diff']}, "
              f"mean |logit diff| {f['mean_abs_logit_diff']}, "
              f"top-1 agreement {f['top1_agreement']} over {f['positions_compared']} positions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
