"""serving/decode.py: a sampled row draws from the distribution generate() would sample alone."""

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from domaintune.serving.decode import GenParams, Row, _RowSampler


class _NoTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return ""


def test_row_sampler_draws_from_generates_own_distribution():
    """generate()'s chain (temperature, top-k, top-p, softmax over the vocabulary) against the row
    sampler's (top-k candidates first, then temperature and top-p on them), on one row of fixed logits
    beside a greedy row: the same support exactly, and frequencies within 5 binomial standard errors
    (seeded, so the check is deterministic; 5 sigma leaves no room for an unlucky but correct draw)."""
    torch.manual_seed(0)
    vocabulary, top_k, draws = 300, 20, 4000
    logits = torch.randn(1, vocabulary) * 0.5  # flat enough that top-k cuts first and top-p then cuts again
    params = GenParams(max_tokens=draws, temperature=0.7, top_p=0.8, seed=11)
    expected = LogitsProcessorList([TemperatureLogitsWarper(0.7), TopKLogitsWarper(top_k), TopPLogitsWarper(0.8)])(
        torch.zeros(1, 1, dtype=torch.long), logits.clone()).softmax(-1)[0]

    sampled, greedy = Row([1], params, _NoTokenizer()), Row([1], GenParams(temperature=0), _NoTokenizer())
    sampler = _RowSampler([sampled, greedy], top_k)
    counts = torch.zeros(vocabulary)
    for _ in range(draws):
        scores = sampler(torch.zeros(2, 1, dtype=torch.long), torch.cat([logits, logits]).clone())
        counts[scores[0].argmax()] += 1
        assert torch.equal(scores[1], logits[0]), "a greedy row's scores are left alone"
        assert torch.isinf(scores[0]).sum() == vocabulary - 1, "a sampled row leaves one token to pick"
    frequency = counts / draws
    assert set(counts.nonzero().flatten().tolist()) <= set(expected.nonzero().flatten().tolist())
    assert 2 < int((expected > 0).sum()) < top_k, "both cuts must matter for the test to mean anything"
    standard_error = (expected * (1 - expected) / draws).sqrt()
    assert bool(((frequency - expected).abs() <= 5 * standard_error + 1e-12).all())

    again = Row([1], params, _NoTokenizer())
    replay = _RowSampler([again], top_k)
    first_draws = [int(replay(torch.zeros(1, 1, dtype=torch.long), logits.clone())[0].argmax()) for _ in range(50)]
    seeded = Row([1], params, _NoTokenizer())
    alone = _RowSampler([seeded], top_k)
    assert first_draws == [int(alone(torch.zeros(1, 1, dtype=torch.long), logits.clone())[0].argmax())
                           for _ in range(50)], "a seed fixes the draws"
