"""The LoRA family: LoRA, DoRA, QLoRA and PiSSA, one PEFT adapter each, differing in base and initialisation.

PiSSA starts the adapter from the principal singular vectors of each adapted weight and subtracts them from
the base weight, so the in-memory base is no longer the base on disk. Its adapter is therefore saved
through peft's conversion (`path_initial_model_for_weight_conversion`): the trained update minus the
initial one, a plain LoRA adapter of rank 2r that loads on the ORIGINAL base, as evaluate, compare, merge
and serve load every adapter.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, PreTrainedModel

from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import TrainConfig
from domaintune.modeling.methods.registry import Method, register

LORA_LEARNING_RATE = 2e-4
# Exact SVD: at the sizes domaintune trains on a CPU (hidden 576 for SmolLM2-135M) it takes seconds; peft's
# fast "pissa_niter_N" approximation is what a multi-billion-parameter model would need instead.
PISSA_INIT = "pissa"


def lora_config(t: TrainConfig, init_lora_weights: bool | str = True) -> LoraConfig:
    return LoraConfig(
        task_type="SEQ_CLS" if t.task == "classification" else "CAUSAL_LM",
        r=t.lora.r,
        lora_alpha=t.lora.alpha,
        lora_dropout=t.lora.dropout,
        target_modules=t.lora.target_modules,
        use_rslora=t.lora.use_rslora,
        use_dora=t.method == "dora",
        init_lora_weights=init_lora_weights,
    )


def wrap_lora(model: PreTrainedModel, t: TrainConfig, init_lora_weights: bool | str = True) -> PreTrainedModel:
    """For `task: classification` PEFT's SEQ_CLS task type also trains and saves the new head."""
    try:
        return get_peft_model(model, lora_config(t, init_lora_weights))
    except ValueError as exc:
        raise DomaintuneError(f"train.lora.target_modules: {exc}") from None


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


_PISSA_INITIAL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # wrapped model -> its initial adapter


def wrap_pissa(model: PreTrainedModel, t: TrainConfig) -> PreTrainedModel:
    """LoRA with PiSSA's initialisation; the initial adapter is kept (in a temporary folder of this process,
    removed with the model) for the conversion at save time."""
    if t.task == "classification":
        # peft's conversion keeps only the LoRA matrices: the trained classification head would not be saved.
        raise DomaintuneError("train.method=pissa does not save a classification head (peft converts only the "
                              "LoRA matrices); for train.task=classification use train.method=lora")
    wrapped = wrap_lora(model, t, PISSA_INIT)
    initial = Path(tempfile.mkdtemp(prefix="domaintune-pissa-initial-"))
    weakref.finalize(wrapped, shutil.rmtree, initial, True)
    wrapped.save_pretrained(initial, safe_serialization=True)
    _PISSA_INITIAL[wrapped] = initial
    return wrapped


def save_pissa(model: PreTrainedModel, folder: Path) -> None:
    """The trained update minus the initial one, as a LoRA adapter of rank 2r on the original base."""
    model.save_pretrained(folder, safe_serialization=True,
                          path_initial_model_for_weight_conversion=str(_PISSA_INITIAL[model]))


register(Method("lora", LORA_LEARNING_RATE, "adapter", wrap_lora))
register(Method("dora", LORA_LEARNING_RATE, "adapter", wrap_lora))
QLORA_ON_CPU = ("(4-bit NF4 through bitsandbytes); on this machine use train.method=lora, which trains the same "
                "adapter on an unquantized base; see docs/troubleshooting.md#qlora-on-cpu")
register(Method("qlora", LORA_LEARNING_RATE, "adapter", wrap_lora, needs_cuda=QLORA_ON_CPU,
                load_base=load_quantized_base))
register(Method("pissa", LORA_LEARNING_RATE, "adapter", wrap_pissa, save=save_pissa))
