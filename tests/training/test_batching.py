"""Packing and loss positions: the cheaper batches compute exactly what plain padded batches compute."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, LlamaForSequenceClassification

from domaintune.training.batching import (
    LossPositionsCollator,
    drop_mask_for_packed_rows,
    pack_rows,
    takes_loss_positions,
)
from domaintune.training.train import encode_rows

PAD = 0


def _examples(lengths: list[int], answer: int | None = None, seed: int = 0) -> list[dict]:
    """Rows of random tokens; with `answer`, only the last `answer` tokens carry a label (answer-only SFT)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(3, 300, (n,), generator=generator).tolist()
        labels = list(ids) if answer is None else [-100] * (n - answer) + ids[n - answer:]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.register_forward_pre_hook(drop_mask_for_packed_rows, with_kwargs=True)
    return model.train()  # train mode, as under the Trainer (dropout is 0 in the tiny config)


def test_packed_example_logits_equal_running_it_alone(tiny_lm):
    rows = _examples([7, 5, 9, 3])
    packed = pack_rows(Dataset.from_list(rows), max_length=16, split_long=False)
    assert len(packed) < len(rows)
    batch = LossPositionsCollator(PAD, keep_logits=False)(list(packed))
    assert "position_ids" in batch
    logits = tiny_lm(**batch).logits
    alone = {tuple(r["input_ids"]): tiny_lm(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows}
    checked = 0
    for i, row in enumerate(packed):
        start = 0
        for length in row["seq_lengths"]:
            expected = alone[tuple(row["input_ids"][start:start + length])]
            torch.testing.assert_close(logits[i, start:start + length], expected, atol=1e-4, rtol=0)
            start += length
            checked += 1
    assert checked == len(rows)


def test_packing_splits_long_documents_and_loses_no_token():
    rows = _examples([40, 3, 17, 9, 25, 1])
    packed = pack_rows(Dataset.from_list(rows), max_length=16, split_long=True)
    assert max(len(r["input_ids"]) for r in packed) <= 16
    assert all(sum(r["seq_lengths"]) == len(r["input_ids"]) == r["length"] for r in packed)
    tokens = sorted(t for r in packed for t in r["input_ids"])
    assert tokens == sorted(t for r in rows for t in r["input_ids"])


def _plainly_padded(rows: list[dict]) -> dict[str, torch.Tensor]:
    """The batch DataCollatorForSeq2Seq builds: right padding, an attention mask, full-length labels."""
    width = max(len(r["input_ids"]) for r in rows)
    return {
        "input_ids": torch.tensor([r["input_ids"] + [PAD] * (width - len(r["input_ids"])) for r in rows]),
        "labels": torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                        for r in rows]),
    }


@pytest.mark.parametrize("answer", [2, None], ids=["answer-only", "all-tokens"])
def test_loss_positions_give_plain_padding_loss_and_gradients(tiny_model_dir, answer):
    rows = _examples([12, 7, 15], answer=answer, seed=1)
    kept = LossPositionsCollator(PAD, keep_logits=True)(rows)
    results = []
    for batch in (_plainly_padded(rows), kept):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain_loss, plain_grads), (kept_loss, kept_grads) = results
    torch.testing.assert_close(kept_loss, plain_loss, atol=1e-6, rtol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(kept_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
    labelled_positions = sum(sum(label != -100 for label in r["labels"][1:]) for r in rows)
    assert int(kept["logits_to_keep"].sum()) == labelled_positions
    if answer:
        assert labelled_positions == answer * len(rows)


def test_packed_rows_keep_no_label_across_examples():
    row = {"input_ids": [5, 6, 7, 8, 9], "labels": [5, 6, 7, 8, 9], "seq_lengths": [3, 2]}
    batch = LossPositionsCollator(PAD, keep_logits=False)([row, {"input_ids": [4], "labels": [4]}])
    assert batch["shift_labels"].tolist() == [[6, 7, -100, 9, -100], [-100] * 5]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
    assert batch["attention_mask"].sum() == 6  # what the Trainer counts as real tokens


def test_takes_loss_positions_probe(tiny_lm, tiny_model_dir):
    assert takes_loss_positions(tiny_lm)
    classifier = LlamaForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    classifier.config.pad_token_id = PAD
    assert not takes_loss_positions(classifier)


@pytest.mark.parametrize("task", ["sft", "causal-lm"])
def test_run_card_counts_every_real_token_once(tiny_overrides, tmp_path, task):
    """One epoch sees each token of the train split exactly once, packed (causal-lm) or padded (sft)."""
    from domaintune import load_config, run_prepare, run_train
    from domaintune.data.prepare import read_split
    from domaintune.modeling.models import load_tokenizer

    cfg = load_config(None, [o for o in tiny_overrides if not o.startswith("train.max_steps")]
                      + [f"train.task={task}", "train.epochs=1", "train.max_train_rows=20"])
    run_prepare(cfg)
    card = json.loads((run_train(cfg) / "run_card.json").read_text())
    tokenizer = load_tokenizer(cfg.model.name, None)
    rows = read_split(cfg.data.output_dir, "train")[:20]
    if task == "causal-lm":
        expected = sum(len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in rows)
    else:
        expected = sum(len(r["input_ids"]) for r in encode_rows(rows, tokenizer, cfg))
    assert card["train_tokens"] == expected
    assert card["peak_rss_bytes"] >= card["rss_before_train_bytes"] > 0
    # `auto`: a tiny step fits this machine with room to spare, so activations are kept, and the card says why
    assert card["gradient_checkpointing"] is False
    assert card["memory_plan"]["decided_by"] == "auto" and card["memory_plan"]["fits"]
