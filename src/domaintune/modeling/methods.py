"""The one place where full fine-tuning, LoRA, DoRA, QLoRA and layer freezing differ: how the model is wrapped."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, PreTrainedModel

from domaintune.core.config import TrainConfig
from domaintune.core.errors import DomaintuneError

ADAPTER_METHODS = ("lora", "dora", "qlora", "dpo")  # runs that hold adapter/
WEIGHT_METHODS = ("full", "freeze")  # runs that hold a whole model/
DEFAULT_LR = {"lora": 2e-4, "dora": 2e-4, "qlora": 2e-4, "freeze": 5e-5, "full": 2e-5, "dpo": 5e-5}


def recomputes_activations(t: TrainConfig) -> bool:
    """`train.gradient_checkpointing`, resolved: unset means on for the adapter methods."""
    return t.gradient_checkpointing if t.gradient_checkpointing is not None else t.method in ADAPTER_METHODS


def check_method_supported(t: TrainConfig) -> None:
    """Fail before anything is loaded when the method cannot run on this machine."""
    if t.method == "qlora" and not torch.cuda.is_available():
        raise DomaintuneError(
            "train.method=qlora needs a CUDA GPU (4-bit NF4 through bitsandbytes); on this machine use "
            "train.method=lora, which trains the same adapter on an unquantized base; "
            "see docs/troubleshooting.md#qlora-on-cpu"
        )


def load_quantized_base(source: str, revision: str | None) -> PreTrainedModel:
    """QLoRA's base: weights in 4-bit NF4 with bf16 compute, prepared for k-bit training."""
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        source, revision=revision, quantization_config=quantization, device_map={"": 0}
    )
    return prepare_model_for_kbit_training(model)


def wrap_model(model: PreTrainedModel, t: TrainConfig) -> PreTrainedModel:
    """Full and freeze train the model in place; the adapter methods wrap it in a PEFT model.

    For `task: classification` PEFT's SEQ_CLS task type also trains and saves the new head.
    """
    if t.method == "full":
        model.requires_grad_(True)
        return model
    if t.method == "freeze":
        return freeze_all_but_top(model, t.freeze_top_layers)
    try:
        return get_peft_model(model, lora_config(t))
    except ValueError as exc:
        raise DomaintuneError(f"train.lora.target_modules: {exc}") from None


def lora_config(t: TrainConfig) -> LoraConfig:
    return LoraConfig(
        task_type="SEQ_CLS" if t.task == "classification" else "CAUSAL_LM",
        r=t.lora.r,
        lora_alpha=t.lora.alpha,
        lora_dropout=t.lora.dropout,
        target_modules=t.lora.target_modules,
        use_rslora=t.lora.use_rslora,
        use_dora=t.method == "dora",
    )


def freeze_all_but_top(model: PreTrainedModel, top: int) -> PreTrainedModel:
    """Train the top `top` decoder blocks, the final norm and the LM head; freeze the rest.

    With tied embeddings the head is the input embedding matrix, so it is left frozen: training it would
    also change every input embedding, which is not what "freeze the lower layers" promises.
    """
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise DomaintuneError(f"train.method=freeze: cannot find the decoder blocks of {type(model).__name__}")
    if top > len(layers):
        raise DomaintuneError(f"train.freeze_top_layers={top} but the model has only {len(layers)} blocks")
    model.requires_grad_(False)
    for block in layers[len(layers) - top:]:
        block.requires_grad_(True)
    norm = getattr(model.model, "norm", None)
    if norm is not None:
        norm.requires_grad_(True)
    if not model.config.tie_word_embeddings:
        model.get_output_embeddings().requires_grad_(True)
    return model
