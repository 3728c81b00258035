"""Paraphrase augmentation through the generate path, on the tiny random Llama: it writes noise, so
these tests check the mechanics (batching, marking, counting, where rows may go), not the wording."""

from collections import Counter

import pytest
import torch

from domaintune.core.config import load_config
from domaintune.data.paraphrase import paraphrases
from domaintune.data.prepare import read_data_card, read_split, run_prepare
from domaintune.data.store import Rows
from domaintune.modeling.generate import generate_batch
from domaintune.modeling.models import load_base


def test_left_padded_batches_generate_what_each_prompt_generates_alone(tiny_model_dir, one_thread):
    torch.set_num_threads(1)
    model, tokenizer = load_base(str(tiny_model_dir))
    texts = ["great", "this drug worked great and the pain is gone", "awful, I stopped after a week"]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True)
               for t in texts]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]
    assert len({len(p) for p in prompts}) == 3, "different lengths, so the batch is padded"
    together = generate_batch(model, tokenizer, prompts, max_new_tokens=12)
    assert together == [generate_batch(model, tokenizer, [p], max_new_tokens=12)[0] for p in prompts]
    assert all(len(ids) == 12 and not ended for ids, ended in together), "a random model does not stop"


@pytest.fixture
def one_thread():
    """Generation steps of a tiny model are microseconds of work: on a busy machine two OpenMP threads
    spend most of each step waiting for each other, so these tests run on one (and restore it)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_paraphrase_rows_are_marked_counted_and_only_in_train(tiny_overrides, one_thread):
    cfg = load_config(None, [*tiny_overrides, "threads=1", "data.augment.method=paraphrase",
                             "data.augment.max_rows=8", "data.augment.copies=2",
                             "data.augment.paraphrase.temperature=1.0", "data.augment.paraphrase.max_length_ratio=3",
                             "data.augment.paraphrase.batch_size=3", "data.augment.paraphrase.max_new_tokens=40"])
    out = run_prepare(cfg)
    card = read_data_card(out)
    augmentation = card.augmentation
    assert augmentation.method == "paraphrase"
    assert augmentation.added + sum(augmentation.rejected.values()) == 8 * 2, augmentation
    assert augmentation.rejected.get("too_long", 0) > 0, "noise that never stops is dropped"
    train = read_split(out, "train")
    made = [r for r in train if r.get("augmented")]
    assert len(made) == augmentation.added == card.augmented_rows
    originals = {r["id"] for r in train if not r.get("augmented")}
    assert all(r["id"].rsplit("#aug", 1)[0] in originals for r in made)
    assert not any(r.get("augmented") for r in read_split(out, "val") + read_split(out, "test"))
    assert "variants dropped" in (out / "data_card.md").read_text()


@pytest.fixture
def scripted(monkeypatch, tiny_model_dir):
    """generate_batch replaced by answers chosen per source text: (text, ended on its own)."""
    _, tokenizer = load_base(str(tiny_model_dir))
    answers = {
        "first review here": ("", True),
        "second review here": ("Second  REVIEW here", True),
        "third review here": ("on and on " * 20, False),
        "fourth review here": ("the fourth one, said differently", True),
        "the fifth review says the tablets helped my back pain within two weeks":
            ("The fifth review says the tablets helped my back pain within two weeks, really.", True),
    }

    def fake(model, tok, prompts, max_new_tokens, temperature=0.0):
        replies = []
        for prompt in prompts:
            source = next(s for s in answers if s in tok.decode(prompt))
            text, ended = answers[source]
            replies.append((tok(text, add_special_tokens=False)["input_ids"], ended))
        return replies

    monkeypatch.setattr("domaintune.modeling.generate.generate_batch", fake)
    return tokenizer


def test_empty_identical_near_copy_and_too_long_generations_are_dropped_and_counted(scripted, tiny_model_dir):
    cfg = load_config(None, [f"model.name={tiny_model_dir}", "data.augment.method=paraphrase",
                             "data.augment.paraphrase.max_new_tokens=100"])
    sources = ["first review here", "second review here", "third review here", "fourth review here",
               "the fifth review says the tablets helped my back pain within two weeks",
               "a review far too long for the limit " * 40]
    rows = Rows.from_list([{"id": f"r{i}", "text": t, "label": "positive", "source": "s"}
                           for i, t in enumerate(sources)])
    rejected = Counter()
    made = list(paraphrases(rows, cfg, rejected))
    assert rejected == {"empty": 1, "identical": 1, "too_long": 1, "near_copy": 1, "source_too_long": 1}
    assert made == [{"id": "r3#aug1", "text": "the fourth one, said differently", "label": "positive",
                     "source": "s", "augmented": True}]
