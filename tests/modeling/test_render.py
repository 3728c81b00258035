import pytest
from transformers import AutoTokenizer

from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import PromptConfig
from domaintune.modeling.render import IGNORE_INDEX, answer_ids, encode_sft, encode_text, prompt_ids


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


PROMPT = PromptConfig(instruction="Classify the sentiment.", system="Be brief.")


def test_answer_loss_masks_the_prompt(tokenizer):
    enc = encode_sft(tokenizer, PROMPT, "this drug worked great", "positive", 128, "answer")
    answer = answer_ids(tokenizer, PROMPT, "positive")
    assert enc.input_ids[-len(answer):] == answer
    assert enc.labels[-len(answer):] == answer
    assert set(enc.labels[: -len(answer)]) == {IGNORE_INDEX}
    assert answer[-1] == tokenizer.eos_token_id, "the answer ends with end-of-turn"
    assert tokenizer.decode(answer, skip_special_tokens=True).strip() == "positive"


def test_whole_sequence_loss(tokenizer):
    enc = encode_sft(tokenizer, PROMPT, "this drug worked great", "positive", 128, "all")
    assert enc.labels == enc.input_ids


def test_rendering_uses_the_chat_template(tokenizer):
    ids = prompt_ids(tokenizer, PROMPT, "some review", 128)
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert "Classify the sentiment.\n\nsome review" in text


def test_long_documents_are_cut_but_the_answer_is_kept(tokenizer):
    long_text = " ".join(["pain is gone and I feel good"] * 100)
    enc = encode_sft(tokenizer, PROMPT, long_text, "negative", 72, "answer")
    assert 60 < len(enc.input_ids) <= 72
    answer = answer_ids(tokenizer, PROMPT, "negative")
    assert enc.input_ids[-len(answer):] == answer


def test_too_small_budget_is_an_error(tokenizer):
    with pytest.raises(DomaintuneError, match="leaves no room"):
        prompt_ids(tokenizer, PROMPT, "x", 5)


def test_missing_chat_template_is_an_error(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    with pytest.raises(DomaintuneError, match="no chat template"):
        prompt_ids(tok, PROMPT, "x", 64)


def test_encode_text_is_raw_and_cut(tokenizer):
    enc = encode_text(tokenizer, "this drug worked great " * 20, 16)
    assert len(enc.input_ids) == 16 and enc.labels == enc.input_ids
    assert tokenizer.eos_token_id not in enc.input_ids


def test_multi_turn_loss_only_on_assistant_turns(tokenizer):
    from domaintune.modeling.render import encode_messages

    messages = [
        {"role": "user", "content": "is it good"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "side effects"},
        {"role": "assistant", "content": "none so far"},
    ]
    enc = encode_messages(tokenizer, messages, 512, "answer")
    full = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    assert enc.input_ids == full[: len(enc.input_ids)]
    learned = tokenizer.decode([t for t in enc.labels if t != IGNORE_INDEX])
    assert "yes" in learned and "none so far" in learned
    assert "is it good" not in learned and "side effects" not in learned
    assert learned.count("<|im_end|>") == 2, "each assistant turn ends with its end-of-turn token"
    assert encode_messages(tokenizer, messages, 512, "all").labels == enc.input_ids


def test_chat_row_without_assistant_is_an_error(tokenizer):
    from domaintune.modeling.render import encode_messages

    with pytest.raises(DomaintuneError, match="no assistant turn"):
        encode_messages(tokenizer, [{"role": "user", "content": "hi"}], 64)


def test_prompt_never_exceeds_its_budget(tokenizer):
    """A cut document can tokenize differently inside the template (a character split between tokens
    decodes to U+FFFD, three bytes); the prompt is then cut again to fit."""
    texts = [" ".join(["pain is gone and I feel good"] * 30), "café au lait, très bien " * 30]
    for text in texts:
        for max_length in range(50, 110):
            assert len(prompt_ids(tokenizer, PROMPT, text, max_length)) <= max_length
