"""`domaintune demo`: the whole path on the embedded model and data, sized for a 2-core CPU.

prepare -> evaluate base -> LoRA-train -> evaluate adapted -> compare. The settings live in
`DEMO_SETTINGS` (the same keys as any config); `configs/demo.yaml` spells them out and a test keeps the
two equal.
"""

from __future__ import annotations

from pathlib import Path

from .compare import comparison_row, run_compare, text_table
from .config import Config, load_config
from .evaluate import run_evaluate
from .prepare import run_prepare
from .train import run_train

DEMO_ROOT = "runs/demo"
DEMO_SETTINGS = [
    f"data.output_dir={DEMO_ROOT}/prepared",
    "prompt.system=You label the sentiment of drug reviews.",
    "train.method=lora",
    "train.task=sft",
    # Loss on the whole sequence, so that the domain's language is learned and shows in perplexity.
    "train.loss_on=all",
    "train.lora.r=16",
    "train.lora.alpha=32",
    "train.learning_rate=0.0005",
    "train.epochs=1",
    "train.max_train_rows=200",
    "train.max_length=160",
    "train.batch_size=8",
    f"train.output_dir={DEMO_ROOT}/lora",
    "evaluate.max_examples=120",
    "evaluate.max_length=160",
    f"evaluate.base_output_dir={DEMO_ROOT}/base",
]


def demo_config(overrides: list[str] | None = None) -> Config:
    return load_config(None, DEMO_SETTINGS + list(overrides or []))


def run_demo(cfg: Config | None = None, log=print) -> Path:
    """Run the demo; returns the path of the report. `log` receives one line per stage."""
    cfg = cfg or demo_config()
    log(f"[1/4] prepare {cfg.data.source} -> {cfg.data.output_dir}")
    run_prepare(cfg)
    log(f"[2/4] evaluate base model {cfg.model.name}")
    run_evaluate(cfg)
    log(f"[3/4] train {cfg.train.method} ({cfg.train.task}, loss on {cfg.train.loss_on}) -> {cfg.train.output_dir}")
    run_dir = run_train(cfg)
    log(f"[4/4] evaluate {run_dir}")
    run_evaluate(cfg, str(run_dir))
    folders = [cfg.evaluate.base_output_dir, str(run_dir)]
    names = ["base", f"{cfg.train.method}"]
    report = run_compare(folders, run_dir, names)
    log("")
    log(text_table([comparison_row(f, n) for f, n in zip(folders, names, strict=False)]))
    log(f"\nreport: {report}")
    return report
