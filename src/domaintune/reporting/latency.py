"""Inference cost of one model, measured in a fresh process: load time, latency, throughput, memory.

compare starts `python -m domaintune.reporting.latency SPEC OUT` once per model, so that one model's memory
(allocator caches, the base loaded for an adapter) never shows up in the next model's figures.

A model is timed by what it does per request (batch of one), its `latency_kind`:
- `generate` (a causal LM): `model.generate` alone, greedy, exactly `max_new_tokens` new tokens
  (`min_new_tokens` equals it, so every model does the same work);
- `classify` (a `train.task=classification` run): one forward pass of model + head on the text cut to
  `max_length` tokens. No token is generated, so its latency is not comparable with `generate`.
Loading, prompt rendering and tokenization happen before the clock starts; `warmup` requests run first
and are not counted. Memory: RSS right after loading, and the highest RSS seen by a 5 ms sampler while
the timed requests run; on CUDA also the allocator's peak over them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

from domaintune.core.config import validate_config
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json
from domaintune.core.process import torch_threads
from domaintune.core.run_card import read_training_run_card
from domaintune.core.runtime import PeakRss, device_name
from domaintune.core.schema import Config
from domaintune.export.merge import load_merged
from domaintune.modeling.render import prompt_ids
from domaintune.modeling.runs import load_run_model


def load_for_timing(spec: dict, cfg: Config) -> tuple:
    """The model and tokenizer as they would be served.

    A merged LoRA is timed as `domaintune merge` wrote it (compare merges it first, in its own process): a
    plain model folder. Merging here instead would leave the mmapped base weights and their merged copies
    both resident, and charge that to the merged model's memory.
    """
    if spec.get("merged_dir"):
        labels = read_training_run_card(spec["target"]).labels if spec.get("task") == "classification" else None
        return load_merged(spec["merged_dir"], labels)
    return load_run_model(spec["target"], cfg)


def time_requests(request: Callable, inputs: list, warmup: int, repeats: int, device: str) -> dict:
    """Run `request` on each input (`warmup` untimed first); latencies, how much it produced, peak memory."""
    for item in inputs[:warmup]:
        request(item)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    latencies, produced = [], 0
    with PeakRss(interval=0.005) as sampler:
        for _ in range(repeats):
            for item in inputs:
                tick = time.perf_counter()
                produced += request(item)
                if device == "cuda":
                    torch.cuda.synchronize()
                latencies.append(time.perf_counter() - tick)
    figures = {"latencies": latencies, "produced": produced, "peak_rss": sampler.peak}
    if device == "cuda":
        figures["cuda_peak"] = torch.cuda.max_memory_allocated()
    return figures


@torch.no_grad()
def measure(spec: dict) -> dict:
    """Load `spec["target"]` as `spec["variant"]`, then time one request per text of `spec["texts"]`."""
    cfg: Config = validate_config(spec["config"])
    device = device_name()
    started = time.perf_counter()
    model, tokenizer = load_for_timing(spec, cfg)
    model.eval().to(device)
    load_seconds = time.perf_counter() - started
    rss_after_load = psutil.Process().memory_info().rss

    n_new = spec["max_new_tokens"]
    if spec.get("task") == "classification":
        kind = "classify"
        inputs = [tokenizer(t, truncation=True, max_length=spec["max_length"], return_tensors="pt").to(device)
                  for t in spec["texts"]]

        def request(batch) -> int:
            model(**batch).logits.argmax(-1)
            return 0
    else:
        kind = "generate"
        inputs = [torch.tensor([prompt_ids(tokenizer, cfg.prompt, t, spec["max_length"])], device=device)
                  for t in spec["texts"]]

        def request(ids: torch.Tensor) -> int:
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                                 min_new_tokens=n_new, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            return out.shape[1] - ids.shape[1]

    timed = time_requests(request, inputs, spec["warmup"], spec["repeats"], device)
    latencies, total = timed["latencies"], sum(timed["latencies"])
    activity = "generating" if kind == "generate" else "classifying"
    result = {
        "variant": spec["variant"],
        "latency_kind": kind,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "load_seconds": round(load_seconds, 3),
        "merge_seconds": None,  # compare fills it in for a merged row: it merges before this process starts
        "requests": len(latencies),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "latency_p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 2),
        "requests_per_second": round(len(latencies) / total, 2) if total else None,
        "rss_after_load_bytes": rss_after_load,
        f"peak_rss_{activity}_bytes": timed["peak_rss"],
        "inference_parameters": sum(p.numel() for p in model.parameters()),
    }
    if kind == "generate":
        result["max_new_tokens"] = n_new
        result["generated_tokens_per_second"] = round(timed["produced"] / total, 2) if total else None
    else:
        result["input_tokens_max"] = max(batch["input_ids"].shape[1] for batch in inputs)
    if "cuda_peak" in timed:
        result[f"cuda_peak_{activity}_bytes"] = timed["cuda_peak"]
    return result


def measure_in_subprocess(spec: dict, work_dir: Path) -> dict:
    """Run `measure(spec)` in a new Python process; a user error there comes back as DomaintuneError."""
    import subprocess

    work_dir.mkdir(parents=True, exist_ok=True)
    name = f"{Path(spec['target']).name}-{spec['variant']}"
    spec_path, out_path = work_dir / f"{name}.spec.json", work_dir / f"{name}.json"
    atomic_write_json(spec_path, spec)
    proc = subprocess.run([sys.executable, "-m", "domaintune.reporting.latency", str(spec_path), str(out_path)],
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
        with torch_threads(spec["config"].get("threads")):
            atomic_write_json(argv[1], measure(spec))
    except DomaintuneError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
