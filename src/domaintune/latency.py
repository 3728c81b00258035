"""Inference cost of one model, measured in a fresh process: load time, latency, tokens/s, memory.

compare starts `python -m domaintune.latency SPEC OUT` once per model, so that one model's memory
(allocator caches, the base loaded for an adapter) never shows up in the next model's figures.

What is timed: `model.generate` alone, per request (batch of one), greedy, exactly `max_new_tokens`
new tokens (`min_new_tokens` equals it, so every model does the same work). Loading, prompt rendering
and tokenization happen before the clock starts; `warmup` requests run first and are not counted.
Memory: RSS right after loading, and the highest RSS seen by a 5 ms sampler while generating; on CUDA
also the allocator's peak during generation.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from .config import Config, validate_config
from .errors import DomaintuneError
from .io import atomic_write_json
from .models import load_causal_lm, load_tokenizer
from .render import prompt_ids
from .runs import load_run_model
from .runtime import PeakRss, configure_threads, device_name

VARIANTS = ("base", "full", "lora", "lora-merged")


def measure(spec: dict) -> dict:
    """Load `spec["target"]` as `spec["variant"]`, then time greedy generation on `spec["texts"]`."""
    cfg: Config = validate_config(spec["config"])
    configure_threads(cfg.threads)
    device = device_name()
    started = time.perf_counter()
    merge_seconds = None
    if spec.get("merged_dir"):
        # A merged LoRA is served as `domaintune merge` wrote it: a plain model folder. Merging in this
        # process instead would leave the mmapped base weights and their merged copies both resident.
        model, tokenizer = load_causal_lm(spec["merged_dir"]), load_tokenizer(spec["merged_dir"])
    else:
        model, tokenizer = load_run_model(spec["target"], cfg)
        if spec["variant"] == "lora-merged":
            tick = time.perf_counter()
            model = model.merge_and_unload()
            merge_seconds = round(time.perf_counter() - tick, 3)
    model.eval().to(device)
    load_seconds = time.perf_counter() - started
    rss_after_load = psutil.Process().memory_info().rss

    prompts = [torch.tensor([prompt_ids(tokenizer, cfg.prompt, t, spec["max_length"])], device=device)
               for t in spec["texts"]]
    n_new = spec["max_new_tokens"]

    def generate(ids: torch.Tensor) -> int:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                             min_new_tokens=n_new, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        if device == "cuda":
            torch.cuda.synchronize()
        return out.shape[1] - ids.shape[1]

    with torch.no_grad():
        for ids in prompts[: spec["warmup"]]:
            generate(ids)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        latencies, generated = [], 0
        with PeakRss(interval=0.005) as sampler:
            for _ in range(spec["repeats"]):
                for ids in prompts:
                    tick = time.perf_counter()
                    generated += generate(ids)
                    latencies.append(time.perf_counter() - tick)
    total = sum(latencies)
    result = {
        "variant": spec["variant"],
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "load_seconds": round(load_seconds, 3),
        "merge_seconds": merge_seconds,
        "requests": len(latencies),
        "max_new_tokens": n_new,
        "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "latency_p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 2),
        "generated_tokens_per_second": round(generated / total, 2) if total else None,
        "rss_after_load_bytes": rss_after_load,
        "peak_rss_generating_bytes": sampler.peak,
        "inference_parameters": sum(p.numel() for p in model.parameters()),
    }
    if device == "cuda":
        result["cuda_peak_generating_bytes"] = torch.cuda.max_memory_allocated()
    return result


def measure_in_subprocess(spec: dict, work_dir: Path) -> dict:
    """Run `measure(spec)` in a new Python process; a user error there comes back as DomaintuneError."""
    import subprocess

    work_dir.mkdir(parents=True, exist_ok=True)
    name = f"{Path(spec['target']).name}-{spec['variant']}"
    spec_path, out_path = work_dir / f"{name}.spec.json", work_dir / f"{name}.json"
    atomic_write_json(spec_path, spec)
    proc = subprocess.run([sys.executable, "-m", "domaintune.latency", str(spec_path), str(out_path)],
                          capture_output=True, text=True)
    spec_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        if proc.returncode == 2:
            raise DomaintuneError(lines[-1])
        raise RuntimeError(f"latency measurement of {spec['target']} ({spec['variant']}) failed:\n{proc.stderr}")
    result = json.loads(out_path.read_text(encoding="utf-8"))
    out_path.unlink(missing_ok=True)
    return result


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        atomic_write_json(argv[1], measure(spec))
    except DomaintuneError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
