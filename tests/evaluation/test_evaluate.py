import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from domaintune.core.schema import PromptConfig
from domaintune.evaluation.metrics import classification_metrics, perplexity_metrics
from domaintune.evaluation.perplexity import text_losses
from domaintune.evaluation.scoring import score_labels, score_options
from domaintune.modeling.render import answer_ids, prompt_ids


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _naive_loglik(model, prompt, option):
    ids = torch.tensor([prompt + option])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(logp[len(prompt) - 1 + j, tok].item() for j, tok in enumerate(option))


def test_shared_prefix_scoring_equals_scoring_each_sequence(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompt_cfg = PromptConfig(instruction="Classify.")
    prompts = [prompt_ids(tok, prompt_cfg, t, 64) for t in ["great drug", "awful, I stopped after a week now"]]
    options = [answer_ids(tok, prompt_cfg, label) for label in ("positive", "negative", "so-so")]
    assert len({len(o) for o in options}) > 1, "options of different lengths exercise the padding"
    scores = score_options(model, prompts, options, tok.pad_token_id)
    for i, p in enumerate(prompts):
        for j, o in enumerate(options):
            assert scores[i, j].item() == pytest.approx(_naive_loglik(model, p, o), abs=1e-4)


def test_perplexity_does_not_count_padding(model_and_tokenizer):
    model, tok = model_and_tokenizer
    texts = ["great drug", "awful, I stopped after a week and the pain came back", "okay"]
    one = perplexity_metrics(**vars(text_losses(model, tok, texts, 64, batch_size=1)))
    padded = perplexity_metrics(**vars(text_losses(model, tok, texts, 64, batch_size=3)))
    assert one["tokens_scored"] == padded["tokens_scored"]
    assert one["test_loss"] == pytest.approx(padded["test_loss"], abs=1e-4)
    assert padded["perplexity"] == pytest.approx(math.exp(padded["test_loss"]), rel=1e-3)


def test_label_scores_keep_the_text_order(model_and_tokenizer):
    from domaintune.core.config import load_config

    model, tok = model_and_tokenizer
    cfg = load_config(None, ["prompt.instruction=Classify."])
    texts, labels = ["a longer text here", "b c", "d"], ["negative", "positive"]
    scores = score_labels(model, tok, cfg, texts, labels, 64, 2)  # batched by length: "b c" and "d" first
    assert scores.shape == (3, 2)
    options = [answer_ids(tok, cfg.prompt, label) for label in labels]
    for i, text in enumerate(texts):
        alone = score_options(model, [prompt_ids(tok, cfg.prompt, text, 64 - max(map(len, options)))], options,
                              tok.pad_token_id)
        # Same tolerance as the shared-prefix test: only padding in the batch differs.
        assert torch.allclose(scores[i], alone[0], atol=1e-4)


def test_classification_metrics():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(0.6667), "support": 2}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2, abs=1e-4)
    assert m["confusion_matrix"]["rows_gold_cols_predicted"] == [[1, 1], [0, 2]]
