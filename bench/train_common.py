"""What bench/train_speed.py and bench/lora_memory.py share: the examples, domaintune's config, child
processes (one per measured run, so each peak RSS is its own), matmul peaks and the FLOPs of a step."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from domaintune import load_config, run_prepare
from domaintune.core.schema import Config
from domaintune.workflows.demo import demo_config

MAX_LENGTH = 512  # the seed recipe pads every example to 512; every recipe cuts there too
GIB = 1 << 30


def bench_config(root: Path, steps: int, batch: int, extra: list[str] | None = None) -> Config:
    """domaintune's defaults on the demo's reviews and prompt, sized to `steps` optimizer steps of `batch`.

    Only the shape of the run is set (rows, steps, batch, max_length); method, learning rate, LoRA
    settings, loss positions, precision and gradient checkpointing stay at their defaults.
    """
    demo = demo_config()  # its data and prompt sections only
    cfg = load_config(None, [
        f"train.output_dir={root}/runs/lora",
        f"train.max_length={MAX_LENGTH}",
        f"train.batch_size={batch}",
        f"train.max_steps={steps}",
        f"train.max_train_rows={steps * batch}",
        "train.logging_steps=1",
        *(extra or []),
    ])
    # val_fraction: run_train evaluates val after training; keep that short
    data = demo.data.model_copy(update={"output_dir": f"{root}/prepared", "val_fraction": 0.02})
    return cfg.model_copy(update={"data": data, "prompt": demo.prompt})


def prepare_examples(cfg: Config) -> list[dict]:
    """The training rows every recipe sees, tokenized once by domaintune (prompt masked, answer labelled)."""
    from domaintune.data.prepare import read_split
    from domaintune.modeling.models import load_tokenizer, resolve_model
    from domaintune.training.train import encode_rows

    if not (Path(cfg.data.output_dir) / "data_card.json").is_file():
        run_prepare(cfg)
    rows = read_split(cfg.data.output_dir, "train")[: cfg.train.max_train_rows]
    tokenizer = load_tokenizer(resolve_model(cfg.model.name), cfg.model.revision)
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in encode_rows(rows, tokenizer, cfg)]


def bench_parser(steps: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=8, help="examples per step")
    parser.add_argument("--work", default=None, help="folder for data and runs (default: a temporary one)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser


def serve_child(args: argparse.Namespace, run) -> bool:
    """In a child started by `run_child`: run `run(spec)` and write its JSON result; False in the parent."""
    if not args.child:
        return False
    spec = json.loads(Path(args.child).read_text())
    Path(args.out).write_text(json.dumps(run(spec)))
    return True


def run_child(script: Path, spec: dict, out: Path, env: dict[str, str] | None = None, timeout: int = 3600) -> dict:
    """Run `script --child SPEC --out OUT` in a fresh process and return the JSON it wrote."""
    spec_path = out.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(script), "--child", str(spec_path), "--out", str(out)],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )
    if done.returncode:
        raise SystemExit(f"{spec.get('name')} failed:\n{done.stderr[-4000:]}")
    result = json.loads(out.read_text())
    result["process_seconds"] = round(time.perf_counter() - started, 1)
    return result


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_peak_gflops(precision: str = "fp32", rows: int = 1024, repeat: int = 8) -> float:
    """Best GFLOP/s of this machine's `precision` matmuls at SmolLM2-135M's shapes (hidden 576, MLP 1536, vocab
    head)."""
    best = 0.0
    for k, n in ((576, 576), (576, 1536), (1536, 576), (576, 8192)):
        a, b = torch.randn(rows, k, dtype=DTYPES[precision]), torch.randn(k, n, dtype=DTYPES[precision])
        a @ b
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(repeat):
                a @ b
            best = max(best, 2 * rows * k * n * repeat / (time.perf_counter() - started) / 1e9)
    return best


def configured_peaks(text: str) -> dict[str, float]:
    """`fp32=205,bf16=411` (the --peak-gflops option) as {precision: GFLOP/s}; empty: none configured."""
    return {k: float(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def matmul_peaks(configured: dict[str, float]) -> dict[str, float]:
    """GFLOP/s per precision a run may be held to: the configured figure, else measured now."""
    from domaintune.core.runtime import mfu_peak_precision

    needed = {"fp32", mfu_peak_precision("bf16")}
    return {p: configured[p] if p in configured else matmul_peak_gflops(p) for p in sorted(needed)}


def step_flops(config, examples: list[dict], method: str, lora_r: int = 8) -> float:
    """FLOPs a training step needs for the loss and gradients of `examples` (no padding, no recomputation).

    Forward: every block matmul at every real token, causal attention, the LM head at labelled positions
    only. Backward: input gradients everywhere; weight gradients for every matrix under `full`, for the
    LoRA matrices only under `lora`. This is the work each recipe must do; padding, logits nobody scores
    and recomputation are not counted, so MFU shows how close a recipe comes to the necessary minimum.
    """
    h, layers, inter, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    block = layers * (2 * h * h + 2 * h * kv + 3 * h * inter)  # q, o; k, v; gate, up, down
    adapter = layers * lora_r * (2 * (h + h) + 2 * (h + kv) + 3 * (h + inter))
    total = 0.0
    for ex in examples:
        n = len(ex["input_ids"])
        scored = sum(label != -100 for label in ex["labels"][1:])
        attention = 4 * h * layers * n * (n + 1) / 2  # QK^T and AV, each position over its prefix
        forward = 2 * block * n + attention + 2 * h * vocab * scored
        if method == "full":
            backward = 2 * (2 * block * n) + 2 * attention + 2 * (2 * h * vocab * scored)
        else:
            lora = 2 * adapter * n
            forward += lora
            backward = 2 * block * n + 2 * attention + 2 * h * vocab * scored + 2 * lora
        total += forward + backward
    return total


def loss_after_training(model, examples: list[dict]) -> float:
    """Mean per-token loss of the trained model on the examples every recipe trained on, one at a time.

    The last logged step's loss is one batch's, and the recipes batch the same examples differently
    (group_by_length, padding); this is the same figure for all of them.
    """
    import torch

    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
            scored = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * scored
            tokens += scored
    return total / tokens


def load_avg() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
