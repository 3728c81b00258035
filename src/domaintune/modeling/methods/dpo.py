"""DPO: a LoRA adapter trained on preference pairs by TRL's DPOTrainer (training/dpo.py runs its loop)."""

from __future__ import annotations

from domaintune.modeling.methods.lora import wrap_lora
from domaintune.modeling.methods.registry import Method, register

# DPOTrainer wraps the model itself from `lora_config`; `wrap` says how, for anyone asking the registry.
register(Method("dpo", 5e-5, "adapter", wrap_lora, trains_on="preferences"))
