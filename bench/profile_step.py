"""Where domaintune's LoRA training step spends its time on the CPU, by the torch profiler (issue 14).

    PYTHONPATH=src python bench/profile_step.py [--steps 9] [--batch 8] [--warmup 2] [--profiled 4]
        [--compare unfused,eager,threads=1,fp32,no-gc] [--set KEY=VALUE ...] [--trace FILE.json]
        [--peak-gflops fp32=205,bf16=411] [--work DIR]

The full measurement for BENCHMARKS.md (about 10 minutes on an idle 2-core machine: the profiled run,
then one unprofiled run each for the defaults and every compared setting):

    PYTHONPATH=src python bench/profile_step.py --steps 9 --batch 8 --compare fp32,eager

What runs is `domaintune train` itself (run_train) at its defaults on the demo's drug reviews and the
embedded SmolLM2-135M (bench/train_common.bench_config: method lora, precision and gradient
checkpointing `auto`, length grouping), in a child process. A TrainerCallback starts torch.profiler
(record_shapes) at the start of optimizer step `warmup + 1` and stops it at the start of step
`warmup + profiled + 1`, so the window holds whole steps with everything between them (data loading,
logging). Each profiler event's self CPU time goes to one bucket (bench/profile_buckets.py: base
matmuls, LoRA matmuls, attention, LM head + loss, optimizer step, other ops); the window's wall time
not inside any op (Python, the Trainer's loop) is reported beside them. Page faults: getrusage's minor
and major fault counts and system CPU time over the window, and an estimate of their time from the
measured cost of a first-touch fault (torch's threads filling a fresh 256 MiB buffer); that time lies
inside the ops' own times, so it is not added to the buckets.

The profiler slows a step down (an event per op); the steps after the window run unprofiled and give
the reference tokens/s and MFU. MFU: bench/train_common.step_flops (the FLOPs the loss and its
gradients need, per real token) per second over the matmul peak of the precision the run uses
(runtime.mfu_peak_precision), measured in this run before and after (the higher) or given by
--peak-gflops. `--compare` runs each named setting in its own unprofiled process on the same examples
and steps, beside domaintune's defaults: `unfused` (optim=adamw_torch, the per-parameter AdamW loop;
the Trainer's default on torch>=2.8 is the fused kernel), `eager` (eager attention instead of SDPA),
`threads=N`, `fp32` (train.precision=fp32), `no-gc` (train.gradient_checkpointing=false).
"""

from __future__ import annotations

import functools
import json
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from profile_buckets import BUCKETS, LETTERS, OTHER, bucket_times
from train_common import (
    bench_config,
    bench_parser,
    configured_peaks,
    load_avg,
    matmul_peaks,
    prepare_examples,
    run_child,
    serve_child,
    step_flops,
)
from transformers import TrainerCallback

SCRIPT = Path(__file__).resolve()


@dataclass(frozen=True)
class Option:
    label: str
    overrides: tuple[str, ...] = ()
    optim: str | None = None  # TrainingArguments.optim
    attention: str | None = None  # the model's attn_implementation


OPTIONS = {
    "default": Option("domaintune defaults"),
    "unfused": Option("AdamW per-parameter loop (optim=adamw_torch)", optim="adamw_torch"),
    "eager": Option("eager attention instead of SDPA", attention="eager"),
    "fp32": Option("train.precision=fp32", ("train.precision=fp32",)),
    "no-gc": Option("train.gradient_checkpointing=false", ("train.gradient_checkpointing=false",)),
}


def option(name: str) -> Option:
    if name.startswith("threads="):
        return Option(f"{name} torch threads", (name,))
    if name not in OPTIONS:
        raise SystemExit(f"--compare: unknown setting '{name}'; choose from {', '.join(OPTIONS)} or threads=N")
    return OPTIONS[name]


def main() -> None:
    parser = bench_parser(steps=9)
    parser.add_argument("--warmup", type=int, default=2, help="steps before the profiled window")
    parser.add_argument("--profiled", type=int, default=4, help="steps in the profiled window")
    parser.add_argument("--compare", default="", help="settings to time beside the defaults, e.g. unfused,eager")
    parser.add_argument("--set", action="append", default=[], help="a config override for every run (KEY=VALUE)")
    parser.add_argument("--trace", help="also write the window's Chrome trace here")
    parser.add_argument("--peak-gflops", default="", help="configured matmul peaks, e.g. fp32=205,bf16=411")
    args = parser.parse_args()
    if serve_child(args, run_spec):
        return
    if args.steps < args.warmup + args.profiled + 2:
        raise SystemExit("--steps must exceed --warmup + --profiled by 2: the steps after the window are the "
                         "unprofiled reference, and a step's time ends where the next one begins")
    compared = [name for name in args.compare.split(",") if name]
    for name in compared:
        option(name)

    work = Path(args.work or tempfile.mkdtemp(prefix="profile_step_"))
    prepare_examples(bench_config(work, args.steps, args.batch, args.set))  # prepares the data once
    print(f"# bench/profile_step.py --steps {args.steps} --batch {args.batch} --warmup {args.warmup} "
          f"--profiled {args.profiled}" + (f" --compare {args.compare}" if compared else "")
          + "".join(f" --set {s}" for s in args.set))
    print(f"CPU: {cpu_kind()}; {load_avg()} (start)", flush=True)
    configured = configured_peaks(args.peak_gflops)
    peaks = matmul_peaks(configured)
    base = {"work": str(work), "steps": args.steps, "batch": args.batch, "warmup": args.warmup, "set": args.set}
    profiled = run_child(SCRIPT, {**base, "name": "profile", "option": "default", "profiled": args.profiled,
                                  "trace": args.trace}, work / "profile.json")
    print(f"  profiled run done, {load_avg()}", flush=True)
    compares = {}
    for name in ["default", *(n for n in compared if n != "default")] if compared else []:
        compares[name] = run_child(SCRIPT, {**base, "name": name, "option": name, "profiled": 0},
                                   work / f"{name}.json")
        print(f"  {name}: {tokens_per_second(compares[name]['reference']):.1f} real tok/s, {load_avg()}",
              flush=True)
    peaks = {k: max(v, matmul_peaks(configured)[k]) for k, v in peaks.items()}
    print(f"{load_avg()} (end); matmul peaks ({'configured' if configured else 'measured'}): "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()) + "\n")
    print(report(profiled, peaks))
    if compares:
        print("\n" + compare_table(compares, peaks))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def cpu_kind() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    cores = torch.get_num_threads()
    return f"{model}, {'AVX512-BF16' if 'avx512_bf16' in lscpu else 'no avx512_bf16 (AVX2)'}, {cores} threads"


def tokens_per_second(part: dict) -> float:
    return part["tokens"] / part["seconds"]


def mfu(part: dict, precision: str, peaks: dict[str, float]) -> str:
    from domaintune.core.runtime import mfu_peak_precision

    held_to = mfu_peak_precision(precision)
    return f"{part['flops'] / part['seconds'] / (peaks[held_to] * 1e9):.1%} of {held_to}"


def report(result: dict, peaks: dict[str, float]) -> str:
    window, reference = result["window"], result["reference"]
    count = window["last"] - window["first"] + 1
    step_ms = window["seconds"] * 1000 / count
    total_us, by_op_us = window["buckets"]["total_us"], window["buckets"]["by_op_us"]
    lines = [f"Profiled: optimizer steps {window['first']}-{window['last']} of {result['steps']} "
             f"(batch {result['batch']}, precision {result['precision']}, recomputation "
             f"{'on' if result['recompute'] else 'off'}, {result['threads']} threads). ms: the profiler's "
             "self time per step (wall time inside an op less its children, on the training thread, intra-op "
             "threads included); shares: of the profiled step's wall time.", "",
             "| bucket | ms / step | share | largest ops (ms / step) |", "|---|---|---|---|"]
    for bucket in BUCKETS:
        ms = total_us[bucket] / 1000 / count
        top = sorted(by_op_us[bucket].items(), key=lambda item: -item[1])[:4 if bucket == OTHER else 3]
        ops = ", ".join(f"{op.removeprefix('aten::')} {us / 1000 / count:.0f}" for op, us in top)
        lines.append(f"| ({LETTERS[bucket]}) {bucket} | {ms:.0f} | {ms / step_ms:.1%} | {ops} |")
    outside = step_ms - window["op_us"] / 1000 / count
    lines.append(f"| (f) outside any op: Python, data, logging | {outside:.0f} | {outside / step_ms:.1%} | |")
    lines.append(f"| **step (wall)** | **{step_ms:.0f}** | 100% | |")
    lines += ["", fault_line(window, result["fault_cost"], count, step_ms), "",
              "| steps | real tokens | ms / step | real tok/s | MFU |", "|---|---|---|---|---|"]
    for part, label in ((window, "profiled"), (reference, "unprofiled")):
        n = part["last"] - part["first"] + 1
        lines.append(f"| {part['first']}-{part['last']} ({label}) | {part['tokens']} | "
                     f"{part['seconds'] * 1000 / n:.0f} | {tokens_per_second(part):.1f} | "
                     f"{mfu(part, result['precision'], peaks)} |")
    lines.append("\nEach step, start to next start (s, real tokens): " + ", ".join(
        f"{i}: {step['seconds']:.1f} ({step['tokens']})" for i, step in enumerate(result["each_step"], 1)))
    return "\n".join(lines)


def fault_line(window: dict, cost: dict, count: int, step_ms: float) -> str:
    faults = window["minflt"] / count
    fault_ms = faults * cost["us_per_fault"] / 1000
    return (f"(g) page faults: {faults:.0f} minor and {window['majflt'] / count:.0f} major per step; system CPU "
            f"{window['stime'] * 1000 / count:.0f} ms / step (all threads; user {window['utime'] * 1000 / count:.0f}); "
            f"at {cost['us_per_fault']:.2f} us per first-touch fault (a fresh {cost['mib']} MiB buffer) about "
            f"{fault_ms:.0f} ms / step, {fault_ms / step_ms:.1%} of the step, already inside the ops' times above.")


def compare_table(results: dict, peaks: dict[str, float]) -> str:
    default = tokens_per_second(results["default"]["reference"])
    lines = ["| setting (unprofiled) | steps timed | precision | recomputation | threads | real tok/s | x defaults "
             "| MFU |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        part = r["reference"]
        lines.append(f"| {option(name).label} | {part['first']}-{part['last']} | {r['precision']} | "
                     f"{'on' if r['recompute'] else 'off'} | {r['threads']} | {tokens_per_second(part):.1f} | "
                     f"{tokens_per_second(part) / default:.2f} | {mfu(part, r['precision'], peaks)} |")
    return "\n".join(lines)


def run_spec(spec: dict) -> dict:
    """In the child: domaintune's training with the step window's callback, and what it measured."""
    from domaintune import run_train

    setting = option(spec["option"])
    work = Path(spec["work"])
    cfg = bench_config(work, spec["steps"], spec["batch"],
                       [*spec["set"], *setting.overrides, f"train.output_dir={work}/runs/{spec['name']}"])
    # Before training: afterwards glibc holds freed heap that a fresh buffer reuses without faulting, which
    # made the per-fault cost (time over the few faults left) come out ~500x too high.
    fault_cost = first_touch_fault_cost() if spec["profiled"] else None
    apply_option(setting)
    window = StepWindow(spec["warmup"], spec["profiled"], cfg.train.lora.r,
                        "full" if cfg.train.method == "full" else "lora", spec.get("trace"))
    run = run_train(cfg, callbacks=[window])
    card = json.loads((run / "run_card.json").read_text())
    shutil.rmtree(run, ignore_errors=True)
    return {**window.result(), "precision": card["precision"], "recompute": card["gradient_checkpointing"],
            "steps": spec["steps"], "batch": spec["batch"],
            "fault_cost": fault_cost}


def apply_option(setting: Option) -> None:
    """Settings domaintune's config has no key for, set where its train module builds them (this process only)."""
    from transformers import TrainingArguments

    from domaintune.training import train as training

    if setting.optim:
        training.TrainingArguments = functools.partial(TrainingArguments, optim=setting.optim)
    if setting.attention:
        load = training.load_causal_lm

        def load_with_attention(source, revision=None):
            model = load(source, revision)
            model.set_attn_implementation(setting.attention)
            return model

        training.load_causal_lm = load_with_attention


class StepWindow(TrainerCallback):
    """Times every optimizer step (from its start to the next one's), counts its real tokens and FLOPs from
    the batches the model receives, and profiles steps `warmup + 1` to `warmup + profiled`."""

    def __init__(self, warmup: int, profiled: int, rank: int, method: str, trace: str | None) -> None:
        self.warmup, self.profiled, self.rank, self.method, self.trace = warmup, profiled, rank, method, trace
        self.steps: list[dict] = []  # per step: its start, and the (length, labels) of each example in it
        self.profiler = None
        self.window: dict = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # prepend: before domaintune's own hook takes a packed batch's attention mask away
        model.register_forward_pre_hook(self._count_examples, with_kwargs=True, prepend=True)
        self.model_config, self.threads = model.config, torch.get_num_threads()

    def on_step_begin(self, args, state, control, **kwargs):
        reached = time.perf_counter()
        if self.profiled and state.global_step == self.warmup + self.profiled:
            self._stop()
        if self.profiled and state.global_step == self.warmup:
            self._start()
        begin = time.perf_counter()
        # paused: starting the profiler and processing its events, which no step's time should include
        self.steps.append({"begin": begin, "paused": begin - reached, "examples": []})

    def _start(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
        self.profiler.start()
        self.window = {"usage": resource.getrusage(resource.RUSAGE_SELF)}

    def _stop(self) -> None:
        usage, before = resource.getrusage(resource.RUSAGE_SELF), self.window["usage"]
        self.profiler.stop()
        events = self.profiler.events()
        times = bucket_times(events, rank=self.rank, vocab=self.model_config.vocab_size)
        if self.trace:
            self.profiler.export_chrome_trace(self.trace)
        self.window = {
            "buckets": times.as_dict(), "op_us": sum(e.self_cpu_time_total for e in events),
            "minflt": usage.ru_minflt - before.ru_minflt, "majflt": usage.ru_majflt - before.ru_majflt,
            "stime": usage.ru_stime - before.ru_stime, "utime": usage.ru_utime - before.ru_utime,
        }
        self.profiler = None

    def _count_examples(self, module, args, kwargs):
        if not (module.training and torch.is_grad_enabled() and self.steps):
            return None
        ids, mask, labels = kwargs["input_ids"], kwargs.get("attention_mask"), kwargs.get("labels")
        positions = kwargs.get("position_ids")
        for i in range(ids.shape[0]):
            n = int(mask[i].sum()) if mask is not None else ids.shape[1]
            row = labels[i, :n].tolist() if labels is not None else [0] * n
            # packed rows: each example's positions start again at 0
            starts = [0] if positions is None else (positions[i, :n] == 0).nonzero().flatten().tolist()
            for start, end in zip(starts, [*starts[1:], n], strict=True):
                self.steps[-1]["examples"].append((end - start, row[start:end]))
        return None

    def result(self) -> dict:
        """The profiled window and the unprofiled steps after it (steps counted from 1; the last step has no
        end, so it is timed in neither)."""
        first = self.warmup + 1
        after = first + self.profiled
        window = {**self.window, **self._span(first, after - 1)} if self.profiled else {}
        timed = [{"seconds": self._seconds(i, i + 1), "tokens": sum(n for n, _ in self.steps[i]["examples"])}
                 for i in range(len(self.steps) - 1)]
        return {"window": window, "reference": self._span(after, len(self.steps) - 1), "threads": self.threads,
                "each_step": timed}

    def _span(self, first: int, last: int) -> dict:
        steps = self.steps[first - 1:last]
        examples = [{"input_ids": range(n), "labels": labels} for step in steps for n, labels in step["examples"]]
        return {"first": first, "last": last, "seconds": self._seconds(first - 1, last),
                "tokens": sum(len(e["input_ids"]) for e in examples),
                "flops": step_flops(self.model_config, examples, self.method, self.rank)}

    def _seconds(self, start: int, end: int) -> float:
        """From the start of step index `start` to that of `end` (0-based), less the profiler's pauses."""
        paused = sum(step["paused"] for step in self.steps[start + 1:end + 1])
        return self.steps[end]["begin"] - self.steps[start]["begin"] - paused


def first_touch_fault_cost(mib: int = 256) -> dict:
    """Wall microseconds per minor page fault: fill a fresh buffer (glibc maps it, the kernel faults its
    pages in on first touch), fill it again, and divide the difference by the faults counted."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    buffer = torch.empty(mib << 20, dtype=torch.uint8)
    buffer.fill_(1)
    first = time.perf_counter() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    started = time.perf_counter()
    buffer.fill_(2)
    again = time.perf_counter() - started
    return {"us_per_fault": (first - again) * 1e6 / max(faults, 1), "faults": faults, "mib": mib}


if __name__ == "__main__":
    main()
