"""Where LoRA's peak memory goes, and what each lever buys: one process per variant, the same batch.

    PYTHONPATH=src python bench/lora_memory.py [--steps 2] [--batch 8] [--variants a,b,...] [--work DIR]

Each variant is `domaintune train` (run_train) on the same drug reviews as bench/train_speed.py, with
one setting changed from domaintune's defaults. Printed per variant (GiB): RSS after the imports, what
loading the model and data added, what training added at its peak (sampled every 50 ms), the peak, the
training wall time, and the peak over full fine-tuning's peak at defaults.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from train_common import GIB, bench_config, bench_parser, load_avg, prepare_examples, run_child, serve_child

SCRIPT = Path(__file__).resolve()
NO_GC, DROPOUT_0, FULL = "train.gradient_checkpointing=false", "train.lora.dropout=0", "train.method=full"
# name -> (config overrides, what the child changes in domaintune: "all-logits" computes the LM head at every
# position; "keep-freed" / "return-at-once" force the allocator setting that recomputation otherwise picks)
VARIANTS = {
    "lora": ([], ()),
    "lora keep freed": ([], ("keep-freed",)),
    "lora dropout=0": ([DROPOUT_0], ()),
    "lora gc=false": ([NO_GC], ()),
    "lora gc=false dropout=0": ([NO_GC, DROPOUT_0], ()),
    "lora gc=false all logits": ([NO_GC], ("all-logits",)),
    "lora gc=false return at once": ([NO_GC], ("return-at-once",)),
    "full": ([FULL], ()),
    "full return at once": ([FULL], ("return-at-once",)),
    "full all logits": ([FULL], ("all-logits",)),
    "full gc=true": ([FULL, "train.gradient_checkpointing=true"], ()),
}


def main() -> None:
    parser = bench_parser(steps=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    if serve_child(args, run_variant):
        return

    names = args.variants.split(",")
    if unknown := [n for n in names if n not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="lora_memory_"))
    examples = prepare_examples(bench_config(work, args.steps, args.batch))
    print(f"# bench/lora_memory.py --steps {args.steps} --batch {args.batch}: {len(examples)} examples, "
          f"{sum(len(e['input_ids']) for e in examples)} real tokens; {load_avg()} (start)")
    results = {}
    for i, name in enumerate(names):
        overrides, undo = VARIANTS[name]
        spec = {"name": name, "work": str(work), "steps": args.steps, "batch": args.batch, "undo": undo,
                "overrides": overrides + [f"train.output_dir={work}/runs/v{i}"]}
        results[name] = run_child(SCRIPT, spec, work / f"v{i}.json")
        print(f"  {name}: peak {results[name]['peak'] / GIB:.2f} GiB, {load_avg()}", flush=True)
    print(f"{load_avg()} (end)\n")
    full = results.get("full", {}).get("peak")
    print("| variant | imports | + model, data | + training | peak RSS | train s | loss | peak / full's |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{r['peak'] / full:.2f}" if full else "-"
        print(f"| {name} | {r['imports'] / GIB:.2f} | {(r['before'] - r['imports']) / GIB:.2f} | "
              f"{(r['peak'] - r['before']) / GIB:.2f} | {r['peak'] / GIB:.2f} | {r['seconds']:.1f} | "
              f"{r['loss']:.4f} | {ratio} |")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def run_variant(spec: dict) -> dict:
    import psutil

    import domaintune.training.train
    from domaintune import run_train

    imports = psutil.Process().memory_info().rss
    if "all-logits" in spec["undo"]:
        domaintune.training.train.takes_loss_positions = lambda model: False
    set_allocator = domaintune.training.train.return_freed_memory_at_once
    if "keep-freed" in spec["undo"]:
        domaintune.training.train.return_freed_memory_at_once = lambda enabled: set_allocator(False)
    if "return-at-once" in spec["undo"]:
        domaintune.training.train.return_freed_memory_at_once = lambda enabled: set_allocator(True)
    run = run_train(bench_config(Path(spec["work"]), spec["steps"], spec["batch"], spec["overrides"]))
    card = json.loads((run / "run_card.json").read_text())
    shutil.rmtree(run, ignore_errors=True)
    return {"imports": imports, "before": card["rss_before_train_bytes"], "peak": card["peak_rss_bytes"],
            "seconds": card["train_wall_seconds"], "loss": card["train_loss"]}


if __name__ == "__main__":
    main()
