"""The memory plan: recomputation only when the fast step would not fit, a refusal before any weight is loaded,
explicit settings that win, `domaintune plan`, and activation coefficients that match what torch keeps."""

from __future__ import annotations

import pytest
import torch

from domaintune import load_config
from domaintune.cli.main import main
from domaintune.core.errors import DomaintuneError
from domaintune.training import memory_plan
from domaintune.training.memory_plan import GIB, MARGIN, model_shape, plan_memory, run_plan, scored_per_row

LARGE, SMALL = 64 * GIB, 1 << 20  # more than any tiny step needs; less than its weights and imports


def test_a_small_budget_forces_recomputation_and_a_large_one_does_not(tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    roomy = plan_memory(cfg, "fp32", budget=LARGE)
    assert not roomy.recompute and roomy.decided_by == "auto" and roomy.fits
    # just too little for the fast step plus the margin, enough for the lean one
    tight = plan_memory(cfg, "fp32", budget=int(roomy.total * (1 + MARGIN)) - 1)
    assert tight.recompute and tight.fits
    assert tight.total < roomy.total == tight.other_total


def test_the_budget_is_this_machines_when_none_is_given(tiny_overrides, monkeypatch):
    cfg = load_config(None, tiny_overrides)
    monkeypatch.setattr(memory_plan, "memory_budget", lambda: SMALL)
    assert run_plan(cfg).recompute and not run_plan(cfg).fits
    monkeypatch.setattr(memory_plan, "memory_budget", lambda: LARGE)
    assert not run_plan(cfg).recompute


@pytest.mark.parametrize("setting", [True, False])
def test_an_explicit_setting_wins_over_the_budget(tiny_overrides, setting):
    cfg = load_config(None, tiny_overrides + [f"train.gradient_checkpointing={str(setting).lower()}"])
    for budget in (SMALL, LARGE):
        plan = plan_memory(cfg, "fp32", budget=budget)
        assert plan.recompute is setting and plan.decided_by == "config"


def test_a_step_that_cannot_fit_stops_before_the_model_is_loaded(tiny_overrides, monkeypatch, tmp_path, capsys):
    import domaintune.training.train as train_module
    from domaintune import run_prepare, run_train

    cfg = load_config(None, tiny_overrides)
    run_prepare(cfg)
    loaded = []
    monkeypatch.setattr(train_module, "load_causal_lm", lambda *args, **kwargs: loaded.append(args))
    monkeypatch.setattr(memory_plan, "memory_budget", lambda: SMALL)
    with pytest.raises(DomaintuneError, match="lower train.batch_size.*or train.max_length"):
        run_train(cfg)
    assert loaded == []
    assert not (tmp_path / "runs").exists()  # no work folder either
    # the progress output says what was estimated and decided before the refusal
    assert "memory plan: lora, 4 x 96 tokens" in capsys.readouterr().out


def test_the_plan_verb_prints_each_component_and_refuses_what_cannot_fit(tiny_overrides, monkeypatch, capsys):
    monkeypatch.setattr(memory_plan, "memory_budget", lambda: LARGE)
    assert main(["plan", *tiny_overrides]) == 0
    out = capsys.readouterr().out
    for component in ("weights", "gradients", "optimizer", "activations", "overlap", "allocator", "runtime", "total",
                      "available"):
        assert f"  {component}" in out
    assert "recompute activations: no" in out and ": fits" in out
    monkeypatch.setattr(memory_plan, "memory_budget", lambda: SMALL)
    assert main(["plan", *tiny_overrides, "train.method=full"]) == 2
    captured = capsys.readouterr()
    assert "does not fit" in captured.out
    assert "use train.method=lora" in captured.err and len(captured.err.strip().splitlines()) == 1


def test_trainable_parameters_follow_the_method(tiny_overrides):
    full = model_shape(load_config(None, tiny_overrides + ["train.method=full"]))
    lora = model_shape(load_config(None, tiny_overrides))
    freeze = model_shape(load_config(None, tiny_overrides + ["train.method=freeze", "train.freeze_top_layers=1"]))
    assert full.trainable == full.parameters
    # all-linear LoRA, r 8: q, k, v, o, gate, up, down in each of the 2 layers (hidden 32, KV 16, MLP 64)
    assert lora.trainable == 2 * 8 * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 2 * (32 + 64) + (64 + 32))
    assert lora.parameters == full.parameters  # the base weights, without the adapter's few
    assert freeze.trained_layers == 1 and 0 < freeze.trainable < full.trainable


def _saved_bytes_per_layer_and_token(model, tokens: int) -> float:
    """Bytes autograd keeps for backward (storages other than parameters, each once), per extra layer and token."""
    from domaintune.training.batching import LossPositionsCollator

    def saved_bytes(layers: int) -> int:
        model.config.num_hidden_layers = layers  # transformers runs only the first `num_hidden_layers` blocks
        ids = torch.randint(0, model.config.vocab_size, (tokens,)).tolist()
        batch = LossPositionsCollator(0)([{"input_ids": ids, "labels": ids}])
        parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def keep(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in parameters:
                seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            model(**batch)
        return sum(seen.values())

    return (saved_bytes(2) - saved_bytes(1)) / tokens


@pytest.mark.parametrize("method", ["full", "lora"])
def test_layer_coefficients_match_what_torch_keeps_for_backward(tiny_overrides, tiny_model_dir, method):
    """Exact in fp32 for transformers' Llama layer: if a transformers release keeps more, this fails."""
    from transformers import AutoModelForCausalLM

    from domaintune.modeling import methods

    cfg = load_config(None, tiny_overrides + [f"train.method={method}"])
    torch.manual_seed(0)
    model = methods.get(method).wrap(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg.train)
    model.train()
    shape = model_shape(cfg)
    expected = memory_plan._layer_bytes(shape, cfg.train, "fp32", "adapter" if method == "lora" else "weights")
    assert _saved_bytes_per_layer_and_token(model, tokens=64) == expected


def test_the_head_runs_where_the_loss_is_taken(tiny_overrides):
    from domaintune import run_prepare
    from domaintune.data.prepare import read_split
    from domaintune.modeling.models import load_tokenizer
    from domaintune.training.train import encode_rows

    cfg = load_config(None, tiny_overrides)  # answer-only SFT on labelled reviews
    assert scored_per_row(cfg) == cfg.train.max_length  # not prepared yet: the labels are unknown
    run_prepare(cfg)
    rows = encode_rows(read_split(cfg.data.output_dir, "train"), load_tokenizer(cfg.model.name), cfg)
    assert scored_per_row(cfg) == max(sum(label != -100 for label in row["labels"]) for row in rows)
    for overrides, expected in ((["train.loss_on=all"], 96), (["train.task=causal-lm"], 96),
                                (["train.task=classification"], 1)):
        assert scored_per_row(load_config(None, tiny_overrides + overrides)) == expected
