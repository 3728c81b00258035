"""The memory plan against measured peaks: random-weight SmolLM2 models, LoRA and full, with and without recomputation.

    PYTHONPATH=src python bench/memory_plan.py [--cases 135m-lora-fast,360m-full-fast@4,...] [--steps 2]
        [--precision fp32|bf16] [--work DIR]

Each case is `domaintune train` (run_train) on the drug reviews as raw text (train.task=causal-lm, packed, so
every row holds max_length tokens and every position is scored: the largest batch the plan assumes),
for `--steps` optimizer steps, in a fresh process. The peak is that child's ru_maxrss (os.wait4: its own,
from the imports to the saved run folder); the estimate is `domaintune plan` for the same config
(training/memory_plan.py), which reads only config.json. The models are the SmolLM2-135M, -360M and -1.7B
configurations with random weights (built once into --work; no download) and SmolLM2's tokenizer, taken from
the embedded model. Full fine-tuning of 1.7B (about 27 GB in fp32 with AdamW) is not run: the plan must
refuse it, which is checked instead. Cases run one at a time: keep each child under about 10 GiB.
`CASE@N` runs a case at batch N instead of SHAPES' (shapes the constants were not fitted to). Children
train on one thread: the peaks do not depend on it, and on a machine shared with other work two threads
stalled each other at OpenMP's barriers. `--precision fp32` by default (bf16 is autocast: `auto` on an
AVX512-BF16 CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

GIB = 1 << 30
SCRIPT = Path(__file__).resolve()

# The published SmolLM2 configurations (hidden, layers, heads, KV heads, intermediate); vocabulary 49,152, tied.
MODELS = {
    "135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536),
    "360m": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                 intermediate_size=2560),
    "1.7b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=8192),
}
# (batch, max_length) per model: chosen so that every measured child stays under about 10 GiB.
SHAPES = {"135m": (4, 256), "360m": (2, 256), "1.7b": (1, 128)}
CASES = [f"{size}-{method}-{speed}" for size in MODELS for method in ("lora", "full")
         for speed in ("fast", "recompute") if not (size == "1.7b" and method == "full")]
REFUSED = ["1.7b-full-fast", "1.7b-full-recompute"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--work", default="/tmp/domaintune-memory-plan")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_case(json.loads(args.child))
    work = Path(args.work)
    rows = []
    for name in args.cases.split(","):
        size = name.split("-")[0]
        model = build_model(work, size)
        overrides = case_overrides(work, name, model, args.steps, args.precision)
        plan = estimate(overrides)
        peak, seconds = measure(overrides)
        rows.append({"case": name, "plan": plan, "peak": peak, "seconds": seconds})
        print(f"  {name}: estimate {plan['total_bytes'] / GIB:.2f} GiB, peak {peak / GIB:.2f} GiB, "
              f"{(plan['total_bytes'] - peak) / peak:+.1%}, {seconds:.0f} s, {load()}", flush=True)
    refusals = [refuse(work, name, args.steps, args.precision) for name in REFUSED]
    print(f"\n{load()} (end)\n")
    print(table(rows, refusals))


def table(rows: list[dict], refusals: list[dict]) -> str:
    lines = ["| case | batch x length | recompute | weights | gradients | optimizer | activations | overlap | "
             "allocator | runtime | estimate GiB | measured peak GiB | estimate / measured |", "|---" * 13 + "|"]
    for row in rows:
        plan, total, peak = row["plan"], row["plan"]["total_bytes"], row["peak"]
        parts = " | ".join(f"{size / GIB:.2f}" for size in plan["components_bytes"].values())
        lines.append(f"| {row['case']} | {plan['batch_size']} x {plan['max_length']} | "
                     f"{'yes' if plan['recompute'] else 'no'} | {parts} | {total / GIB:.2f} | {peak / GIB:.2f} | "
                     f"{total / peak:.3f} |")
    for refusal in refusals:
        lines.append(f"| {refusal['case']} | {refusal['shape']} | {refusal['recompute']} | refused before loading: "
                     f"exit {refusal['exit']}, child peak {refusal['peak'] / GIB:.2f} GiB: `{refusal['error']}` |")
    return "\n".join(lines)


def refuse(work: Path, name: str, steps: int, precision: str) -> dict:
    """`domaintune train` on a case the plan must refuse: it has to stop with one line before loading the model."""
    size = name.split("-")[0]
    overrides = case_overrides(work, name, build_model(work, size), steps, precision)
    child = subprocess.Popen([sys.executable, "-m", "domaintune", "train", *overrides], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    error = child.stderr.read().strip().splitlines()[-1]
    _, status, usage = os.wait4(child.pid, 0)
    batch, length = SHAPES[size]
    return {"case": name, "shape": f"{batch} x {length}", "recompute": "yes" if "recompute" in name else "no",
            "exit": os.waitstatus_to_exitcode(status), "peak": usage.ru_maxrss * 1024, "error": error}


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def case_overrides(work: Path, name: str, model: Path, steps: int, precision: str) -> list[str]:
    case, _, batch_given = name.partition("@")
    size, method, speed = case.split("-")
    batch, length = SHAPES[size]
    batch = int(batch_given or batch)
    return [
        f"model.name={model}",
        "threads=1",  # peaks do not depend on it; on a loaded machine OpenMP's barriers stall two threads
        "data.source=drugreviews",
        "data.format=classification",
        "data.text_column=review",
        "data.label_column=rating",
        "data.val_fraction=0.01",
        f"data.output_dir={work}/prepared",
        "train.task=causal-lm",
        f"train.method={method}",
        f"train.gradient_checkpointing={'true' if speed == 'recompute' else 'false'}",
        f"train.precision={precision}",
        f"train.batch_size={batch}",
        f"train.max_length={length}",
        f"train.max_steps={steps}",
        f"train.max_train_rows={steps * batch * length // 40}",  # reviews run 100-200 tokens: enough for full rows
        "train.logging_steps=1",
        f"train.output_dir={work}/runs/{name.replace('@', '-b')}",
    ]


def build_model(work: Path, size: str) -> Path:
    folder = work / "models" / f"smollm2-{size}-random"
    if not (folder / "config.json").is_file():
        subprocess.run([sys.executable, str(SCRIPT), "--child", json.dumps({"build": size, "folder": str(folder)})],
                       check=True)
    return folder


def estimate(overrides: list[str]) -> dict:
    from domaintune import load_config, run_plan

    return run_plan(load_config(None, overrides)).as_dict()


def measure(overrides: list[str]) -> tuple[int, float]:
    """The child's own peak RSS (wait4's rusage is that one child's, unlike RUSAGE_CHILDREN's running maximum)."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, str(SCRIPT), "--child", json.dumps({"overrides": overrides})])
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"case failed: {overrides}")
    return usage.ru_maxrss * 1024, time.perf_counter() - started


def run_case(spec: dict) -> None:
    if "build" in spec:
        return _build(spec["build"], Path(spec["folder"]))
    import shutil

    from domaintune import load_config, run_prepare, run_train

    cfg = load_config(None, spec["overrides"])
    if not (Path(cfg.data.output_dir) / "data_card.json").is_file():
        run_prepare(cfg)
    run = run_train(cfg, overwrite=True)
    card = json.loads((run / "run_card.json").read_text())
    print(f"    steps {card['steps']}, tokens {card['train_tokens']}, before train "
          f"{card['rss_before_train_bytes'] / GIB:.2f} GiB, sampled peak {card['peak_rss_bytes'] / GIB:.2f} GiB")
    shutil.rmtree(run, ignore_errors=True)


def _build(size: str, folder: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from domaintune.modeling.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    config = LlamaConfig(vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=8192,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **MODELS[size])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    staging = folder.with_name(folder.name + ".partial")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)


if __name__ == "__main__":
    main()
