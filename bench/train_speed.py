"""Training throughput and memory: the seed's recipe, TRL's SFTTrainer and domaintune, side by side.

    PYTHONPATH=src python bench/train_speed.py [--steps 4] [--batch 8] [--trl-defaults-steps 1]
        [--trl-defaults-batch 2] [--recipes seed,trl-defaults,trl-fp32,lora,lora-no-gc,full] [--work DIR]
        [--peak-gflops fp32=205,bf16=411]

Every recipe trains SmolLM2-135M on the same drug reviews, tokenized once by domaintune (chat-template
prompt masked, answer labelled), with the same optimizer settings (AdamW, domaintune's learning rate,
warm-up and cosine schedule) and, for LoRA, the same adapter (domaintune's defaults: r=8, alpha=16,
all linear layers). What differs is how each tool runs a step:
- seed: HF Trainer, every example padded to max_length=512, fp32 (the seed project's recipe);
- trl-defaults: TRL SFTTrainer as shipped (model passed by path, bf16 autocast and gradient
  checkpointing on, each batch padded to its longest row). bf16 is emulated on a CPU without
  AVX512-BF16/AMX and runs ~50x slower than fp32, so by default this recipe runs `--trl-defaults-steps`
  steps of `--trl-defaults-batch` examples (a smaller batch pads less, which favours TRL);
- trl-fp32: the same with bf16 off, a fairer second line;
- lora / full: `domaintune train` (run_train) at its defaults; lora-no-gc: LoRA with
  train.gradient_checkpointing=false.
Each runs in its own process, so peak RSS is per recipe (sampled during training). Real tokens are the
non-padding tokens of the examples trained on, counted the same way for all. "Loss after" is the trained
model's mean per-token loss on those same examples, one at a time, the same for every recipe (the last
step's loss is one batch's, batched differently by each tool). MFU: the FLOPs the loss
and its gradients need (bench/train_common.step_flops) per second, over the matmul peak of the precision
the recipe runs in (runtime.mfu_peak_precision: bf16 where the CPU or GPU runs it natively, else fp32),
measured at the model's shapes at the start and end of this run (the higher), or as given by --peak-gflops
(an idle machine's figures, say).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from train_common import (
    GIB,
    MAX_LENGTH,
    bench_config,
    bench_parser,
    configured_peaks,
    load_avg,
    loss_after_training,
    matmul_peaks,
    prepare_examples,
    run_child,
    serve_child,
    step_flops,
)

SCRIPT = Path(__file__).resolve()
RECIPES = ("seed", "trl-defaults", "trl-fp32", "lora", "lora-no-gc", "full")
LABELS = {
    "seed": "seed: HF Trainer, pad to 512, fp32",
    "trl-defaults": "TRL SFTTrainer defaults (bf16 autocast, grad. checkpointing)",
    "trl-fp32": "TRL SFTTrainer, bf16 off",
    "lora": "domaintune LoRA (defaults)",
    "lora-no-gc": "domaintune LoRA, gradient_checkpointing=false",
    "full": "domaintune full (defaults)",
}


def main() -> None:
    parser = bench_parser(steps=4)
    parser.add_argument("--trl-defaults-steps", type=int, default=1)
    parser.add_argument("--trl-defaults-batch", type=int, default=2)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--peak-gflops", default="", help="configured matmul peaks, e.g. fp32=205,bf16=411 "
                        "(unset: measured in this run)")
    args = parser.parse_args()
    if serve_child(args, run_recipe):
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="train_speed_"))
    cfg = bench_config(work, args.steps, args.batch)
    examples = prepare_examples(cfg)
    (work / "examples.json").write_text(json.dumps(examples))
    print(f"# bench/train_speed.py --steps {args.steps} --batch {args.batch} --trl-defaults-steps "
          f"{args.trl_defaults_steps} --trl-defaults-batch {args.trl_defaults_batch}")
    print(f"{load_avg()} (start)")
    configured = configured_peaks(args.peak_gflops)
    peaks = matmul_peaks(configured)
    results = {}
    for name in args.recipes.split(","):
        steps, batch = (args.trl_defaults_steps, args.trl_defaults_batch) if name == "trl-defaults" else (
            args.steps, args.batch)
        spec = {"name": name, "work": str(work), "steps": steps, "batch": batch, "bench_steps": args.steps,
                "bench_batch": args.batch}
        results[name] = run_child(SCRIPT, spec, work / f"{name}.json")
        print(f"  {name}: {results[name]['tokens_per_second']:.1f} real tok/s, {load_avg()}", flush=True)
    peaks = {k: max(v, matmul_peaks(configured)[k]) for k, v in peaks.items()}
    source = "configured" if configured else "measured"
    print(f"{load_avg()} (end); matmul peaks ({source}): "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()) + "\n")
    print(table(results, examples, peaks))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def table(results: dict, examples: list[dict], peaks: dict[str, float]) -> str:
    from transformers import AutoConfig

    from domaintune.core.runtime import mfu_peak_precision
    from domaintune.modeling.models import resolve_model

    model_config = AutoConfig.from_pretrained(resolve_model("smollm2-135m"))
    seed = results.get("seed", {}).get("tokens_per_second")
    trl = results.get("trl-defaults", {}).get("tokens_per_second")
    lines = ["| recipe | examples | real tokens | train s | real tok/s | x seed | x TRL defaults | mean loss | "
             "last step's loss | loss after, same examples | peak RSS GiB | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        used = examples[: r["examples"]]
        flops = step_flops(model_config, used, "full" if name == "full" else "lora")
        held_to = mfu_peak_precision(r["precision"])
        mfu = flops / r["train_seconds"] / (peaks[held_to] * 1e9)
        lines.append(
            f"| {LABELS[name]} | {r['examples']} | {r['real_tokens']} | {r['train_seconds']:.1f} | "
            f"{r['tokens_per_second']:.1f} | {_ratio(r['tokens_per_second'], seed)} | "
            f"{_ratio(r['tokens_per_second'], trl)} | {r['mean_loss']:.4f} | {r['final_loss']:.4f} | "
            f"{r['loss_after']:.4f} | "
            f"{r['peak_rss_bytes'] / GIB:.2f} | {mfu:.0%} of {held_to} |"
        )
    lines.append("")
    if "lora" in results and "full" in results:
        ratio = results["lora"]["peak_rss_bytes"] / results["full"]["peak_rss_bytes"]
        lines.append(f"LoRA / full peak RSS at domaintune's defaults, same batch: {ratio:.2f} (target <= 0.5)")
    if seed:
        held_to = mfu_peak_precision(results.get("lora", {}).get("precision", "fp32"))
        flops_per_token = step_flops(model_config, examples, "lora") / sum(len(e["input_ids"]) for e in examples)
        ceiling = peaks[held_to] * 1e9 / flops_per_token
        lines.append(f"LoRA at 100% of the {held_to} matmul peak, doing only the necessary work: {ceiling:.0f} real "
                     f"tok/s = {ceiling / seed:.1f}x the seed recipe (target 8x)")
    return "\n".join(lines)


def _ratio(value: float, reference: float | None) -> str:
    return f"{value / reference:.2f}" if reference else "-"


def run_recipe(spec: dict) -> dict:
    name, work = spec["name"], Path(spec["work"])
    examples = json.loads((work / "examples.json").read_text())[: spec["steps"] * spec["batch"]]
    if name in ("lora", "lora-no-gc", "full"):
        return run_domaintune(spec, work, examples)
    return run_library(spec, work, examples)


def run_domaintune(spec: dict, work: Path, examples: list[dict]) -> dict:
    from domaintune import run_train
    from domaintune.modeling.runs import load_run_model

    extra = {"lora": [], "lora-no-gc": ["train.gradient_checkpointing=false"], "full": ["train.method=full"]}
    cfg = bench_config(work, spec["bench_steps"], spec["bench_batch"],
                       extra[spec["name"]] + [f"train.output_dir={work}/runs/{spec['name']}"])
    run = run_train(cfg)
    card = json.loads((run / "run_card.json").read_text())
    after = loss_after_training(load_run_model(str(run), cfg)[0], examples)
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    real = sum(len(e["input_ids"]) for e in examples)
    assert card["train_tokens"] == real, (card["train_tokens"], real)
    shutil.rmtree(run, ignore_errors=True)
    return _result(examples, card["train_wall_seconds"], card["train_loss"], losses, card["peak_rss_bytes"], after,
                   card["precision"])


def run_library(spec: dict, work: Path, examples: list[dict]) -> dict:
    """The seed and TRL recipes, built as those tools are used."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from domaintune.core.runtime import PeakRss
    from domaintune.modeling import methods
    from domaintune.modeling.methods.lora import lora_config
    from domaintune.modeling.models import load_tokenizer, resolve_model

    cfg = bench_config(work, spec["bench_steps"], spec["bench_batch"])
    set_seed(cfg.seed)
    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source, None)
    shared = dict(
        output_dir=str(work / "runs" / spec["name"]), max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch"], learning_rate=methods.get("lora").default_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.train.warmup_ratio, logging_steps=1, save_strategy="no", report_to="none", seed=cfg.seed,
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(),  # TRL's bf16 default refuses a CPU without it
    )
    dataset = Dataset.from_list(examples)
    if spec["name"] == "seed":
        from peft import get_peft_model

        model = get_peft_model(AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32),
                               lora_config(cfg.train))
        collator = DataCollatorForSeq2Seq(tokenizer, padding="max_length", max_length=MAX_LENGTH)
        trainer = Trainer(model=model, args=TrainingArguments(**shared), train_dataset=dataset,
                          data_collator=collator, processing_class=tokenizer)
    else:
        from trl import SFTConfig, SFTTrainer

        sft = SFTConfig(**shared, **({"bf16": False} if spec["name"] == "trl-fp32" else {}))
        trainer = SFTTrainer(model=str(source), args=sft, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=lora_config(cfg.train))
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    started = time.perf_counter()
    with PeakRss() as memory:
        result = trainer.train()
    wall = time.perf_counter() - started
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert counter.real_tokens == sum(len(e["input_ids"]) for e in examples)
    after = loss_after_training(trainer.model, examples)
    return _result(examples, wall, result.training_loss, losses, memory.peak, after,
                   "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32")


class CountingCollator:
    """Counts the real (non-padding) tokens of the examples a recipe trains on, before any padding."""

    def __init__(self, collator) -> None:
        self.collator, self.real_tokens = collator, 0

    def __call__(self, features):
        self.real_tokens += sum(len(f["input_ids"]) for f in features)
        return self.collator(features)


def _result(examples: list[dict], wall: float, mean_loss: float, losses: list[float], peak: int, after: float,
            precision: str) -> dict:
    real = sum(len(e["input_ids"]) for e in examples)
    return {"examples": len(examples), "real_tokens": real, "train_seconds": wall, "tokens_per_second": real / wall,
            "mean_loss": mean_loss, "final_loss": losses[-1], "peak_rss_bytes": peak,
            "loss_after": after, "precision": precision}


if __name__ == "__main__":
    main()
