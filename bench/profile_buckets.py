"""Where a profiled training step's time goes: each torch profiler event sorted into one bucket.

Used by bench/profile_step.py; kept free of torch and the model so tests/bench_tools can check the rules
on plain names and shapes. An event is classified by its own name, the names of the events it runs
inside (its scope: `Optimizer.step#AdamW.step`, `aten::scaled_dot_product_attention`, an autograd node
such as `autograd::engine::evaluate_function: NllLossBackward0`) and its input shapes. Matmuls are told
apart by shape, since with `record_shapes` that is all an `aten::mm` says about itself:
- a dimension equal to the vocabulary (49,152 on SmolLM2) is the LM head, forward or backward;
- a dimension equal to the LoRA rank r is an adapter product (x A^T is [n, in] x [in, r], its B product
  [n, r] x [r, out], and their gradients keep an r side too); this is ambiguous only when r equals one of
  the model's own dimensions (hidden 576, kv 192, MLP 1536 on SmolLM2), which domaintune's r never does;
- an input of 4 or more dimensions is eager attention's QK^T or AV (the linear layers see [batch, seq,
  hidden] at most);
- anything else is a frozen base weight's matmul.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BASE, LORA, ATTENTION, HEAD, OPTIMIZER, OTHER = (
    "base matmuls", "LoRA matmuls", "attention", "LM head + loss", "optimizer step", "other")
BUCKETS = (BASE, LORA, ATTENTION, HEAD, OPTIMIZER, OTHER)
LETTERS = dict(zip(BUCKETS, "abcdef", strict=True))

MATMULS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "aten::mv",
    "aten::addmv", "aten::_addmm_activation", "aten::mkldnn_linear", "aten::_mkldnn_linear",
})
# Lower-cased fragments of an event's or an enclosing event's name. The optimizer's record_function
# scopes cover AdamW's foreach/fused kernels and zero_grad; the Trainer's gradient clipping
# (clip_grad_norm_) runs `_foreach_norm`/`_foreach_mul_` outside them and is counted with the step it guards.
OPTIMIZER_MARKS = ("optimizer.step", "optimizer.zero_grad", "aten::_foreach_", "aten::_fused_adam")
LOSS_MARKS = ("cross_entropy", "log_softmax", "logsoftmax", "nll_loss", "nllloss")
ATTENTION_MARKS = ("scaled_dot_product", "scaleddotproduct", "flash_attention", "efficient_attention",
                   "aten::softmax", "aten::_softmax", "softmaxbackward")  # the last three: eager attention
NOT_HEAD = ("embedding",)  # the (tied) embedding's gather also has a vocabulary-sized weight


def classify(name: str, shapes: Sequence[Sequence[int]], scope: Sequence[str] = (), *, rank: int,
             vocab: int) -> str:
    """The bucket of one profiler event: `name` (e.g. `aten::mm`), its input `shapes` (one list per input,
    [] for a scalar or non-tensor) and the names of the events enclosing it, innermost first."""
    names = [n.lower() for n in (name, *scope)]
    if any(mark in n for n in names for mark in OPTIMIZER_MARKS):
        return OPTIMIZER
    if any(mark in n for n in names for mark in LOSS_MARKS):
        return HEAD
    if any(mark in n for n in names for mark in ATTENTION_MARKS):
        return ATTENTION
    if not any(mark in names[0] for mark in NOT_HEAD) and any(vocab in shape for shape in shapes):
        return HEAD  # the head's matmuls and what touches the logits (their float cast, the kept positions)
    if name in MATMULS:
        if any(len(shape) >= 4 for shape in shapes):
            return ATTENTION
        if any(rank in shape[-2:] for shape in shapes if len(shape) >= 2):
            return LORA
        return BASE
    return OTHER


@dataclass
class BucketTimes:
    """Self CPU time (microseconds) per bucket, and per op name within each bucket."""

    total_us: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0.0))
    by_op_us: dict[str, dict[str, float]] = field(default_factory=lambda: {b: {} for b in BUCKETS})

    def add(self, bucket: str, op: str, self_us: float) -> None:
        self.total_us[bucket] += self_us
        self.by_op_us[bucket][op] = self.by_op_us[bucket].get(op, 0.0) + self_us

    def top_ops(self, bucket: str, count: int = 4) -> list[tuple[str, float]]:
        return sorted(self.by_op_us[bucket].items(), key=lambda item: -item[1])[:count]

    def as_dict(self) -> dict:
        return {"total_us": self.total_us, "by_op_us": self.by_op_us}


def bucket_times(events: Iterable, *, rank: int, vocab: int) -> BucketTimes:
    """Sum the self CPU time of torch profiler FunctionEvents (`prof.events()`) per bucket.

    Self times add up without double counting: a parent's self time excludes its children's. Each event
    needs `name`, `input_shapes`, `self_cpu_time_total` (us) and `cpu_parent` (None at the top).
    """
    times = BucketTimes()
    for event in events:
        scope, parent = [], event.cpu_parent
        while parent is not None:
            scope.append(parent.name)
            parent = parent.cpu_parent
        shapes = [list(s) if isinstance(s, list | tuple) else [] for s in (event.input_shapes or [])]
        times.add(classify(event.name, shapes, scope, rank=rank, vocab=vocab), event.name,
                  float(event.self_cpu_time_total))
    return times
