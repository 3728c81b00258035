"""bench/profile_buckets.py: which bucket a profiled op's self time goes to, from its name, shapes and scope.

The shapes are SmolLM2-135M's (hidden 576, kv 192, MLP 1536, vocab 49,152) at 440 tokens per batch, as
a LoRA r=8 step records them; no model is loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # bench/ is scripts, not a package

from profile_buckets import (  # noqa: E402
    ATTENTION,
    BASE,
    HEAD,
    LORA,
    OPTIMIZER,
    OTHER,
    bucket_times,
    classify,
)

RANK, VOCAB, TOKENS = 8, 49152, 440


@pytest.mark.parametrize(("name", "shapes", "scope", "bucket"), [
    # frozen base weights, forward and the input gradient of backward
    ("aten::mm", [[TOKENS, 576], [576, 1536]], (), BASE),
    ("aten::mm", [[TOKENS, 1536], [1536, 576]], ("autograd::engine::evaluate_function: MmBackward0",), BASE),
    ("aten::addmm", [[192], [TOKENS, 576], [576, 192]], (), BASE),
    ("aten::linear", [[2, 220, 576], [576, 576], []], (), BASE),
    # LoRA: x A^T, (x A^T) B^T, and the gradients that keep an r side
    ("aten::mm", [[TOKENS, 576], [576, RANK]], (), LORA),
    ("aten::mm", [[TOKENS, RANK], [RANK, 1536]], (), LORA),
    ("aten::mm", [[RANK, TOKENS], [TOKENS, 576]], (), LORA),
    ("aten::mm", [[1536, TOKENS], [TOKENS, RANK]], (), LORA),
    # a batch dimension equal to r is not the adapter's: only a matrix's own two dimensions count
    ("aten::linear", [[RANK, 55, 576], [1536, 576]], (), BASE),
    # attention: SDPA, its backward and what runs inside them; eager attention's matmuls and softmax
    ("aten::_scaled_dot_product_flash_attention_for_cpu", [[2, 9, 220, 64]] * 3, (), ATTENTION),
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", [[2, 9, 220, 64]] * 4, (), ATTENTION),
    ("aten::empty", [[]], ("aten::_scaled_dot_product_flash_attention_for_cpu",
                           "aten::scaled_dot_product_attention"), ATTENTION),
    ("aten::matmul", [[2, 9, 220, 64], [2, 9, 64, 220]], (), ATTENTION),
    ("aten::_softmax", [[2, 9, 220, 220], [], []], ("aten::softmax",), ATTENTION),
    ("aten::_softmax_backward_data", [[2, 9, 220, 220]] * 2, (), ATTENTION),
    # the LM head and the loss: the vocabulary-wide matmuls and logits, cross-entropy forward and backward
    ("aten::mm", [[4, 576], [576, VOCAB]], (), HEAD),
    ("aten::mm", [[4, VOCAB], [VOCAB, 576]], (), HEAD),
    ("aten::copy_", [[4, VOCAB], [4, VOCAB], []], (), HEAD),
    ("aten::_log_softmax", [[4, VOCAB], [], []], ("aten::log_softmax", "aten::cross_entropy_loss"), HEAD),
    ("aten::nll_loss_backward", [[], [4, VOCAB], [4]], (), HEAD),
    ("aten::sum", [[4]], ("aten::cross_entropy_loss",), HEAD),
    # the embedding's gather has a vocabulary-sized weight but is not the head
    ("aten::embedding", [[VOCAB, 576], [2, 220]], (), OTHER),
    # the optimizer step: fused or foreach AdamW, zero_grad, and the gradient clipping before it
    ("aten::_fused_adamw_", [[[8, 576]], [[8, 576]]], ("Optimizer.step#AdamW.step",), OPTIMIZER),
    ("aten::_foreach_mul_", [[[8, 576]], []], (), OPTIMIZER),
    ("aten::mm", [[8, 576], [576, 8]], ("Optimizer.step#AdamW.step",), OPTIMIZER),
    ("aten::zero_", [[8, 576]], ("Optimizer.zero_grad#AdamW.zero_grad",), OPTIMIZER),
    # everything else: norms, rotary, casts, elementwise
    ("aten::copy_", [[2, 220, 576], [2, 220, 576], []], ("aten::_to_copy", "aten::to"), OTHER),
    ("aten::mul", [[2, 220, 1536], [2, 220, 1536]], (), OTHER),
    ("aten::rsqrt", [[2, 220, 1]], (), OTHER),
])
def test_classify(name, shapes, scope, bucket):
    assert classify(name, shapes, scope, rank=RANK, vocab=VOCAB) == bucket


def _event(name, shapes, self_us, parent=None):
    return SimpleNamespace(name=name, input_shapes=shapes, self_cpu_time_total=self_us, cpu_parent=parent)


def test_bucket_times_sums_self_time_per_bucket_with_the_scope_of_enclosing_events():
    step = _event("Optimizer.step#AdamW.step", [], 5.0)
    sdpa = _event("aten::scaled_dot_product_attention", [[2, 9, 220, 64]] * 3, 1.0)
    events = [
        _event("aten::mm", [[TOKENS, 576], [576, 1536]], 100.0),
        _event("aten::mm", [[TOKENS, 576], [576, 192]], 20.0),
        _event("aten::mm", [[TOKENS, 576], [576, RANK]], 7.0),
        sdpa,
        _event("aten::empty", [[]], 3.0, parent=_event("aten::_flash", [], 0.0, parent=sdpa)),  # two levels down
        step,
        _event("aten::_fused_adamw_", [], 40.0, parent=step),
        _event("aten::add", [[2, 220, 576], [2, 220, 576]], 9.0),
        _event("aten::copy_", None, 2.0),  # no shapes recorded
    ]
    times = bucket_times(events, rank=RANK, vocab=VOCAB)
    assert times.total_us[BASE] == 120.0
    assert times.total_us[LORA] == 7.0
    assert times.total_us[ATTENTION] == 4.0
    assert times.total_us[OPTIMIZER] == 45.0
    assert times.total_us[OTHER] == 11.0
    assert times.total_us[HEAD] == 0.0
    assert times.top_ops(BASE) == [("aten::mm", 120.0)]
    assert sum(times.total_us.values()) == sum(e.self_cpu_time_total for e in events)
