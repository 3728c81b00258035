"""One LoRA step's time and RSS growth under each glibc mmap threshold, with and without recomputation.

    PYTHONPATH=src python bench/lora_allocator.py THRESHOLD gc|nogc [TRIM]
        (THRESHOLD, TRIM in bytes; THRESHOLD 0 = glibc's default; TRIM also sets M_TRIM_THRESHOLD)

The model alone, outside the Trainer: SmolLM2-135M with LoRA r=8 on all linear layers, 4 AdamW steps on
random token rows of 8 x 120, 200, 160 and 140 tokens, the loss at every position. Run once per setting
(mallopt is process-wide and cannot be undone) to see what `runtime.return_freed_memory_at_once` trades.
"""

from __future__ import annotations

import ctypes
import sys
import time

import torch

threshold, recompute = int(sys.argv[1]), sys.argv[2] == "gc"
trim = int(sys.argv[3]) if len(sys.argv) > 3 else 0
if threshold:
    ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD, before anything is allocated
if trim:
    ctypes.CDLL("libc.so.6").mallopt(-1, trim)  # M_TRIM_THRESHOLD

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from domaintune.core.runtime import PeakRss  # noqa: E402
from domaintune.modeling.models import resolve_model  # noqa: E402

torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m"), dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0,
                                         task_type="CAUSAL_LM"))
if recompute:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
model.train()
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
generator = torch.Generator().manual_seed(0)
seconds = []
with PeakRss(interval=0.02) as memory:
    for length in (120, 200, 160, 140):
        ids = torch.randint(0, 49000, (8, length), generator=generator)
        started = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds.append(time.perf_counter() - started)
print(f"threshold={threshold} recompute={recompute}: steps {[round(s, 1) for s in seconds]} s, "
      f"sum {sum(seconds):.1f} s, RSS +{(memory.peak - memory.before) / 2**30:.2f} GiB")
