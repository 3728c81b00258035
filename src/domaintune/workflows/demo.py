"""`domaintune demo`: the whole path on the embedded model and data, sized for a 2-core CPU.

prepare -> evaluate base -> LoRA-train -> evaluate adapted -> TF-IDF baseline -> compare. With `--compare`
it also trains full fine-tuning on the same rows, then times every model and writes
report.html for base vs LoRA (unmerged and merged) vs full vs TF-IDF. The settings are demo.yaml beside
this module, an ordinary config file (configs/demo.yaml is a link to it).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from domaintune.core.config import load_config
from domaintune.core.schema import Config
from domaintune.data.prepare import check_prepare_output, run_prepare
from domaintune.evaluation.baseline import check_baseline_output, run_baseline
from domaintune.evaluation.evaluate import check_base_output, run_evaluate
from domaintune.reporting.compare import LatencySettings, check_compare_output, run_compare
from domaintune.reporting.tables import text_report
from domaintune.training.train import check_train_output, run_train

FULL_LEARNING_RATE = 5e-5  # 10x below LoRA's: updating every weight needs smaller steps


def demo_config(overrides: list[str] | None = None) -> Config:
    """The packaged demo.yaml (configs/demo.yaml links to it), with `overrides` on top."""
    with resources.as_file(resources.files("domaintune.workflows") / "demo.yaml") as path:
        return load_config(path, list(overrides or []))


def full_config(cfg: Config) -> Config:
    """`cfg` for the full fine-tune of `demo --compare`; its run folder sits beside the LoRA run's."""
    full = cfg.model_copy(deep=True)
    full.train.method = "full"
    full.train.learning_rate = FULL_LEARNING_RATE
    full.train.output_dir = str(Path(cfg.train.output_dir).parent / "full")
    return full


def run_demo(cfg: Config | None = None, log=print, compare: bool = False,
             latency: LatencySettings | None = None, overwrite: bool = False) -> Path:
    """Run the demo; returns the path of report.html. `log` receives one line per stage.

    Every folder it writes is checked before the first stage starts (outputs.py): an existing folder
    that is not domaintune's output of the same kind stops the demo at once, unless `overwrite`.
    """
    cfg = cfg or demo_config()
    configs = [cfg, full_config(cfg)] if compare else [cfg]
    folders = [cfg.evaluate.base_output_dir, *(c.train.output_dir for c in configs), cfg.evaluate.baseline_output_dir]
    out = Path(cfg.train.output_dir).parent / "compare"
    check_prepare_output(cfg, overwrite)
    check_base_output(cfg, overwrite)
    for run_cfg in configs:
        check_train_output(run_cfg, overwrite)
    check_baseline_output(cfg, overwrite)
    check_compare_output(folders, out, overwrite)

    steps = 7 if compare else 5
    log(f"[1/{steps}] prepare {cfg.data.source} -> {cfg.data.output_dir}")
    run_prepare(cfg, overwrite)
    log(f"[2/{steps}] evaluate base model {cfg.model.name}")
    run_evaluate(cfg, overwrite=overwrite)
    names = ["base"]
    step = 3
    for run_cfg in configs:
        t = run_cfg.train
        log(f"[{step}/{steps}] train {t.method} ({t.task}, loss on {t.loss_on}) -> {t.output_dir}")
        run_dir = run_train(run_cfg, overwrite=overwrite)
        log(f"[{step + 1}/{steps}] evaluate {run_dir}")
        run_evaluate(run_cfg, str(run_dir))
        names.append(t.method)
        step += 2
    # The baseline in every demo, not only with --compare: an adapted model's figures mean little without
    # the simple model it has to beat, and its search and fit on the demo's rows take seconds.
    log(f"[{steps}/{steps}] TF-IDF + logistic regression baseline -> {cfg.evaluate.baseline_output_dir}")
    run_baseline(cfg, overwrite)
    names.append("tfidf")
    report = run_compare(folders, out, names, latency=(latency or LatencySettings()) if compare else None,
                         threads=cfg.threads, log=log, overwrite=overwrite)
    log("")
    log(text_report(json.loads((out / "comparison.json").read_text(encoding="utf-8"))))
    log(f"\nreport: {report}")
    return report
