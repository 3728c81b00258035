"""Why `precision: auto` picks fp32 or bf16 on a CPU: matmul throughput and one training step, side by side.

    python bench/precision.py [--model smollm2-135m] [--seq 128] [--batch 4]

Prints GFLOP/s for fp32 and bf16 matmuls at the model's shapes, and tokens/s of a LoRA forward+backward
of the real model in fp32 and under bf16 autocast, in one process, so the ratios are comparable.
"""

from __future__ import annotations

import argparse
import time

import torch


def matmul_gflops(dtype: torch.dtype, m: int = 1024, k: int = 576, n: int = 1536, repeat: int = 10) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # warm-up
    started = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * m * k * n * repeat / (time.perf_counter() - started) / 1e9


def lora_step_tokens_per_second(model_name: str, batch: int, seq: int, bf16: bool, steps: int = 2) -> float:
    from peft import LoraConfig, get_peft_model

    from domaintune.modeling.models import load_base

    model, _ = load_base(model_name)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    timings = []
    for _ in range(steps + 1):  # the first step is warm-up
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        timings.append(time.perf_counter() - started)
    return batch * seq / (sum(timings[1:]) / steps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()

    from domaintune.core.runtime import cpu_has_fast_bf16, resolve_precision

    print(f"threads={torch.get_num_threads()} capability={torch.backends.cpu.get_cpu_capability()} "
          f"native_bf16={cpu_has_fast_bf16()} auto->{resolve_precision('auto')}")
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"matmul 1024x576x1536: fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s, bf16/fp32 = {bf16 / fp32:.3f}")
    if args.skip_training:
        return
    fp32_step = lora_step_tokens_per_second(args.model, args.batch, args.seq, bf16=False)
    print(f"LoRA step fp32: {fp32_step:.1f} tokens/s")
    bf16_step = lora_step_tokens_per_second(args.model, args.batch, args.seq, bf16=True, steps=1)
    print(f"LoRA step bf16 autocast: {bf16_step:.1f} tokens/s, bf16/fp32 = {bf16_step / fp32_step:.3f}")


if __name__ == "__main__":
    main()
