"""train.method=pissa: PiSSA's initialisation through peft, saved as an adapter that fits the original base."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, TrainerCallback

from domaintune import load_config, run_prepare, run_train
from domaintune.core.errors import DomaintuneError
from domaintune.modeling import methods

PROBE = torch.tensor([[1, 5, 9, 14, 27, 3, 40]])
# fp32 throughout (tiny_overrides names it). The saved adapter computes W x + dW x where the in-memory model
# computes W_res x + A B x, with W_res = W - A0 B0 rounded once per weight in fp32 (relative 6e-8); through
# the tiny model's 2 blocks that moves its O(1) logits by about 1e-6. 1e-5 leaves a 10x margin, while an
# adapter saved without the conversion misses by the whole initial product A0 B0 (order 1e-1 here).
FP32_LOGITS_ATOL = 1e-5


def _lora_products(model) -> dict[str, torch.Tensor]:
    return {name: module.lora_B["default"].weight @ module.lora_A["default"].weight
            for name, module in model.named_modules() if hasattr(module, "lora_A") and "default" in module.lora_A}


def _wrapped(tiny_model_dir, method: str, *overrides: str):
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"train.method={method}", *overrides])
    return methods.get(method).wrap(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg.train)


def test_pissa_starts_from_principal_vectors_and_the_same_function(tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    lora, pissa = _wrapped(tiny_model_dir, "lora"), _wrapped(tiny_model_dir, "pissa")
    assert all(torch.count_nonzero(p) == 0 for p in _lora_products(lora).values())  # LoRA: B = 0
    assert all(torch.count_nonzero(p) > 0 for p in _lora_products(pissa).values())
    moved = pissa.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.equal(moved, base.model.layers[0].self_attn.q_proj.weight)  # W_res = W - A0 B0
    with torch.no_grad():
        torch.testing.assert_close(pissa.eval()(PROBE).logits, base(PROBE).logits, atol=FP32_LOGITS_ATOL, rtol=0)


def test_pissa_refuses_classification_whose_head_it_would_not_save(tiny_model_dir):
    with pytest.raises(DomaintuneError, match="for train.task=classification use train.method=lora"):
        _wrapped(tiny_model_dir, "pissa", "train.task=classification")


class _LogitsAtEnd(TrainerCallback):
    """Keeps what the trained in-memory model answers, for comparison with the saved adapter."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        with torch.no_grad():
            self.logits = model(PROBE).logits


def test_pissa_adapter_loads_on_the_original_base(tiny_overrides, tiny_model_dir):
    cfg = load_config(None, [*tiny_overrides, "train.method=pissa", "train.learning_rate=1e-2"])
    run_prepare(cfg)
    probe = _LogitsAtEnd()
    run_dir = run_train(cfg, callbacks=[probe])

    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["method"] == "pissa" and card["base_weights_fingerprint"]
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    weights_on_disk = {k: v.clone() for k, v in original.state_dict().items()}
    loaded = PeftModel.from_pretrained(original, run_dir / "adapter").eval()
    # A plain LoRA adapter: loading it leaves the base as it is, so other adapters can share that base
    # (an unconverted PiSSA adapter would run the SVD again and subtract A0 B0 from the shared weights).
    adapted = {k.replace(".base_layer", ""): v for k, v in loaded.get_base_model().state_dict().items()
               if ".base_layer." in k}
    assert adapted and all(torch.equal(v, weights_on_disk[k]) for k, v in adapted.items())
    with torch.no_grad():
        logits = loaded(PROBE).logits
        untrained = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(PROBE).logits
    torch.testing.assert_close(logits, probe.logits, atol=FP32_LOGITS_ATOL, rtol=0)
    assert (logits - untrained).abs().max() > 100 * FP32_LOGITS_ATOL  # it trained
    saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 2 * cfg.train.lora.r and saved["init_lora_weights"] is True  # peft's converted form
