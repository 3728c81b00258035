"""Perplexity over whole documents in overlapping windows (perplexity.py), against one pass per window by hand."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_reviews
from domaintune.evaluation.metrics import perplexity_metrics
from domaintune.evaluation.perplexity import document_losses, encode_documents, text_losses, windows
from exactness import UNIT_ROUNDOFF
from independent import perplexity_by_hand

REVIEWS = [r["review"] for r in make_reviews(60)]
# Long documents (about 245 and 100 tiny-tokenizer tokens) beside a short one, so windows of 32 cut them.
TEXTS = [" ".join(REVIEWS[:15]), REVIEWS[0], " ".join(REVIEWS[20:26])]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def nll_tolerance(nll: float) -> float:
    """How far two float32 computations of the same summed NLL may drift apart.

    Both run the same float32 operations on the same values; a kernel may only accumulate a reduction in
    another order for another batch shape (padding). A reordered float32 sum of n terms moves by at most
    (n - 1) u times the sum of their magnitudes (Higham's gamma bound). The longest reduction behind one
    token's loss is the log-sum-exp over the tiny model's 400-token vocabulary: at most 399 u in the
    log, under 400 u of a loss that is about 6 nats (a random model's log 400) and never under 1 here.
    Every loss is positive, so the document's float64 sum moves by at most 400 u times the sum itself.
    """
    return 400 * UNIT_ROUNDOFF["fp32"] * nll


@torch.no_grad()
def single_pass_nll(model, ids: list[int]) -> float:
    """The summed NLL of tokens 1.. of `ids` in one forward pass (losses in float32, summed in float64)."""
    tensor = torch.tensor([ids])
    logprobs = model(input_ids=tensor).logits[0, :-1].float().log_softmax(-1)
    losses = -logprobs.gather(-1, tensor[0, 1:, None])[:, 0].double()
    assert float(losses.min()) >= 1, "nll_tolerance assumes losses of at least 1 nat (a random model's)"
    return float(losses.sum())


@pytest.mark.parametrize("max_length", range(2, 9))
def test_windows_score_every_token_after_the_first_exactly_once(max_length):
    for length in range(1, 40):
        for stride in range(1, max_length):
            plan = windows(0, length, max_length, stride)
            scored = [t for w in plan for t in range(w.first_scored, w.end)]
            assert scored == list(range(1, length)), (length, max_length, stride)
            assert all(w.end - w.begin <= max_length for w in plan)
            # A token of a later window keeps at least the overlap before it as context.
            assert all(w.first_scored - w.begin >= min(max_length - stride, w.first_scored) for w in plan)
        # Without overlap each window's own first token has no context and goes unscored.
        plan = windows(0, length, max_length, max_length)
        scored = [t for w in plan for t in range(w.first_scored, w.end)]
        assert scored == [t for t in range(length) if t % max_length]
        assert windows(0, length, max_length, 1, whole_document=False) == (
            [w for w in windows(0, length, max_length, 1)[:1]])


def test_strided_losses_cover_every_token_and_match_the_guide_loop(model_and_tokenizer):
    model, tok = model_and_tokenizer
    documents = encode_documents(tok, TEXTS)
    assert max(map(len, documents)) > 4 * 32, "several windows per long document"
    losses = text_losses(model, tok, TEXTS, 32, batch_size=4, stride=12)
    assert losses.lengths == [len(ids) for ids in documents]
    assert losses.tokens == [len(ids) - 1 for ids in documents]
    figures = perplexity_metrics(losses.nll, losses.tokens, losses.lengths)
    assert figures["tokens_scored"] == sum(map(len, documents)) - len(documents)
    assert figures["tokens_in_split"] == sum(map(len, documents))
    for text, nll in zip(TEXTS, losses.nll, strict=True):
        by_hand = perplexity_by_hand(model, tok, [text], 32, stride=12)
        total = by_hand["test_loss"] * by_hand["tokens_scored"]
        assert abs(nll - total) <= nll_tolerance(total), (nll, total)


def test_a_window_over_the_whole_document_is_the_single_pass(model_and_tokenizer):
    model, tok = model_and_tokenizer
    documents = encode_documents(tok, TEXTS)
    losses = document_losses(model, tok.pad_token_id, documents, 512, batch_size=3, stride=256)
    for ids, nll, tokens in zip(documents, losses.nll, losses.tokens, strict=True):
        expected = single_pass_nll(model, ids)
        assert tokens == len(ids) - 1
        assert abs(nll - expected) <= nll_tolerance(expected), (nll, expected)


def test_without_overlap_the_windows_are_independent_chunks(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids = encode_documents(tok, TEXTS[:1])[0]
    losses = document_losses(model, tok.pad_token_id, [ids], 32, batch_size=4, stride=32)
    chunks = [ids[start : start + 32] for start in range(0, len(ids), 32)]
    assert losses.tokens == [len(ids) - len(chunks)]
    expected = sum(single_pass_nll(model, chunk) for chunk in chunks)
    assert abs(losses.nll[0] - expected) <= nll_tolerance(expected), (losses.nll[0], expected)


def test_a_long_document_is_not_judged_by_its_first_window(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids = encode_documents(tok, TEXTS[:1])[0]
    whole = text_losses(model, tok, TEXTS[:1], 32, batch_size=4)
    first = text_losses(model, tok, TEXTS[:1], 32, batch_size=4, scope="first_window")
    assert (whole.tokens, first.tokens) == ([len(ids) - 1], [31])
    assert first.lengths == whole.lengths == [len(ids)]
    expected = single_pass_nll(model, ids[:32])
    assert abs(first.nll[0] - expected) <= nll_tolerance(expected)
    by_hand = perplexity_by_hand(model, tok, TEXTS[:1], 32)
    assert abs(whole.nll[0] - by_hand["test_loss"] * by_hand["tokens_scored"]) <= nll_tolerance(whole.nll[0])
    # The later text of the long review reads differently to the model than its first 32 tokens do.
    assert abs(whole.nll[0] / whole.tokens[0] - first.nll[0] / first.tokens[0]) > 1e-3
