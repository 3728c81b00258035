"""Benchmark: where does an f16 GGUF's logit difference come from, the writer or the rounding of weights?

    PYTHONPATH=src python bench/gguf_precision.py [--model smollm2-135m] [--run RUN] [--prompts 8] \
        [--out /tmp/gguf_precision] [--threads 2]

Writes the model (the base, or a run's model with --run, a LoRA merged) once per variant with
`domaintune.export.write_gguf`: f16; f16 with the token embedding kept f32; f16 with the attention and
MLP weights kept f32; f32; q8_0. Each file is read back with transformers' GGUF loader (both sides fp32,
the same attention implementation, checked by `round_trip`), the GGUF tokenizer is asserted to give the
same token ids as the source's, and the logits are compared on --prompts drug-review test prompts.
Each file (hundreds of MB) is deleted once read back. Prints a markdown table and the load average;
writes OUT/gguf_precision.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from domaintune import demo_config, run_prepare
from domaintune.data.prepare import read_split
from domaintune.export.gguf import round_trip, tokenizer_pre, write_gguf
from domaintune.modeling.render import prompt_ids
from domaintune.modeling.runs import BASE, is_adapter_run, load_run_model, run_card

# (label, GGUF type of the 2-D weights, llama.cpp name prefixes kept f32)
VARIANTS = [
    ("f16", "f16", ()),
    ("f16 + embedding f32", "f16", ("token_embd",)),
    ("f16 + attention & MLP f32", "f16", ("blk.",)),
    ("f32", "f32", ()),
    ("q8_0", "q8_0", ()),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--run", help="a run folder instead of the base model")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="/tmp/gguf_precision")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config([f"model.name={args.model}", f"data.output_dir={out}/prepared", f"threads={args.threads}"])
    torch.set_num_threads(args.threads)
    if not (Path(cfg.data.output_dir) / "data_card.json").is_file():
        run_prepare(cfg)
    target = args.run or BASE
    model, tokenizer = load_run_model(target, cfg)
    if args.run and is_adapter_run(run_card(args.run)):
        model = model.merge_and_unload()
    model.eval()
    texts = [r["text"] for r in read_split(cfg.data.output_dir, "test")[: args.prompts]]
    prompts = [prompt_ids(tokenizer, cfg.prompt, t, cfg.evaluate.max_length) for t in texts]
    pre = tokenizer_pre(cfg.model.name)

    results = []
    started = time.time()
    for label, fmt, keep in VARIANTS:
        filename = f"model-{label.replace(' ', '').replace('&', '-').replace('+', '_')}.gguf"
        path = out / filename
        write_gguf(model, tokenizer, path, fmt, label, pre, keep_f32=keep)
        size = path.stat().st_size
        gguf_tokenizer = AutoTokenizer.from_pretrained(str(out), gguf_file=filename)
        for text in texts:  # the same ids on both sides, or the logits would not be comparable
            assert gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], f"{label}: token ids differ"
        figures = round_trip(model, out, filename, prompts)
        path.unlink()
        results.append({"variant": label, "type": fmt, "kept_f32": list(keep), "bytes": size, **figures})
        print(f"{label}: done ({time.time() - started:.0f} s)", file=sys.stderr)
    load = [round(x, 2) for x in os.getloadavg()]
    summary = {"model": cfg.model.name, "target": target, "prompts": len(prompts), "load_average_at_end": load,
               "wall_seconds": round(time.time() - started, 1), "results": results}
    (out / "gguf_precision.json").write_text(json.dumps(summary, indent=2))

    print(f"model {cfg.model.name} ({target}), {len(prompts)} prompts, load average at the end {load}")
    print("| file | size | max abs logit diff | mean abs logit diff | top-1 agreement | positions |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['bytes'] / 2**20:.1f} MiB | {r['max_abs_logit_diff']:.4f} | "
              f"{r['mean_abs_logit_diff']:.5f} | {r['top1_agreement']:.3f} | {r['positions_compared']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
