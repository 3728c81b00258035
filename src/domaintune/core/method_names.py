"""The names `train.method` accepts, each with the line the config reference shows.

The methods themselves (default learning rate, how the model is wrapped, what is saved, whether a CPU
runs them) are registered in `domaintune.modeling.methods`; only their names and descriptions live here,
because the config is validated in this bottom layer, without importing torch, and core may not import
modeling. The registry refuses a method whose name is not declared here, and a test checks that every
name here has a registered method, so the two cannot drift apart (peft keeps its PeftType names and its
`register_peft_method` behaviour apart in the same way).
"""

from __future__ import annotations

METHOD_DESCRIPTIONS: dict[str, str] = {
    "lora": "train a PEFT LoRA adapter",
    "dora": "LoRA with weight decomposition (DoRA)",
    "qlora": "LoRA on a 4-bit NF4 base (CUDA only)",
    "pissa": "LoRA started from the principal singular vectors of each weight (PiSSA), saved as a plain LoRA "
    "adapter of rank 2r for the original base",
    "freeze": "train only the top `freeze_top_layers` blocks and the head",
    "full": "update every weight",
    "dpo": "a LoRA adapter trained by TRL's DPO on reviewers' preferences (`train.dpo`)",
}

METHOD_NAMES: tuple[str, ...] = tuple(METHOD_DESCRIPTIONS)


def method_reference() -> str:
    """The `train.method` description: every name with its line."""
    return "; ".join(f"`{name}`: {text}" for name, text in METHOD_DESCRIPTIONS.items()) + "."
