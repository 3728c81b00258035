"""The classification head's logits over many texts: batched by length, returned in the texts' order."""

import random

import torch
from transformers import AutoTokenizer

from domaintune.modeling.seqcls import label_logits, load_classifier, set_pad_token

LABELS = ["negative", "neutral", "positive"]


def test_logits_come_back_in_text_order_and_match_one_text_at_a_time(tiny_model_dir):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = load_classifier(str(tiny_model_dir), LABELS).eval()
    set_pad_token(model, tokenizer)
    rng = random.Random(0)
    words = "the drug helped my pain but made me tired every single day".split()
    # Lengths from 1 to 40 words in shuffled order: sorting by length reorders them inside the call.
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(13)]
    with torch.no_grad():
        batched = label_logits(model, tokenizer, texts, max_length=32, batch_size=4)
        alone = torch.cat([model(**tokenizer(t, truncation=True, max_length=32, return_tensors="pt")).logits
                           for t in texts])
    assert batched.shape == (13, 3)
    # Same fp32 arithmetic up to the order of sums inside the matmuls (padding changes their shapes):
    # the tiny model's hidden size is a few dozen, so each logit is off by a few fp32 ulps of values near 1.
    assert torch.allclose(batched, alone, rtol=0, atol=1e-5), (batched - alone).abs().max()
    assert len({tuple(row.tolist()) for row in alone}) == 13, "every text has its own logits, so order shows"
