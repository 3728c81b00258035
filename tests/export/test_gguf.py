"""The tokenizer metadata of an exported GGUF file, against the embedded SmolLM2 GGUF's own.

The embedded file was written by llama.cpp's convert_hf_to_gguf.py, so its tokenizer.* keys are what
llama.cpp expects for this tokenizer; an export of a model with the same tokenizer must write the same
values. The model is a tiny random Llama with SmolLM2's vocabulary size (seconds); only its tokenizer is real.
"""

from __future__ import annotations

import gguf
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from domaintune.export.gguf import write_gguf
from domaintune.modeling.models import embedded_gguf, load_tokenizer, resolve_model

# The converter writes add_space_prefix=False; the export leaves the key out, which llama.cpp reads as
# false for a gpt2 (BPE) tokenizer. The one key that differs, and it predates the gguf.SpecialVocab switch.
NOT_WRITTEN = {"tokenizer.ggml.add_space_prefix"}


def tokenizer_metadata(path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer.")}


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    # The cached HF folder the embedded GGUF converts to (once, about 20 s), as training loads it.
    return load_tokenizer(resolve_model("smollm2-135m"))


@pytest.fixture(scope="module")
def expected() -> dict:
    return tokenizer_metadata(embedded_gguf("smollm2-135m"))


def tiny_llama(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                        tie_word_embeddings=True))


def test_exported_tokenizer_metadata_equals_llama_cpp_converters(smollm2_tokenizer, expected, tmp_path):
    pre = expected["tokenizer.ggml.pre"]  # run_export takes it from the same file (tokenizer_pre)
    path = tmp_path / "tiny.gguf"
    write_gguf(tiny_llama(len(expected["tokenizer.ggml.tokens"])), smollm2_tokenizer, path, "f32", "tiny", pre)
    written = tokenizer_metadata(path)
    assert sorted(written) == sorted(set(expected) - NOT_WRITTEN)
    for key, value in written.items():
        assert value == expected[key], f"{key} differs from the converter's"


def test_embedding_rows_beyond_the_tokenizer_are_unused_placeholders(smollm2_tokenizer, expected, tmp_path):
    n = len(expected["tokenizer.ggml.tokens"])
    path = tmp_path / "padded.gguf"
    write_gguf(tiny_llama(n + 2), smollm2_tokenizer, path, "f32", "padded", "smollm")
    written = tokenizer_metadata(path)
    assert written["tokenizer.ggml.tokens"] == [*expected["tokenizer.ggml.tokens"], f"[PAD{n}]", f"[PAD{n + 1}]"]
    unused = int(gguf.TokenType.UNUSED)
    assert written["tokenizer.ggml.token_type"] == [*expected["tokenizer.ggml.token_type"], unused, unused]
    assert written["tokenizer.ggml.merges"] == expected["tokenizer.ggml.merges"]
