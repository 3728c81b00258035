"""`domaintune export RUN --format gguf`: the run's model as GGUF files (f16 and q8_0; f32 on request) for
llama.cpp/Ollama.

Writing goes through the `gguf` package (GGUFWriter, its llama tensor-name map, its q8_0 quantizer, and
SpecialVocab for the merges, special-token ids and chat template). Two things it does not provide are done
here: the HF -> llama.cpp row permutation of the q/k projections, and the token list with its token types
(both live in llama.cpp's convert_hf_to_gguf.py, not in the package; `vocabulary` says why the package's
vocab classes do not fit). Only Llama-architecture models are exported (SmolLM2 is one).

Each file is read back with transformers' GGUF loader and its logits compared with the source model's
on a few test prompts; the figures go to export_card.json beside the files. f32 reads back bit-identical:
the writer adds no error, and all of f16's difference is the rounding of the weights (BENCHMARKS.md,
bench/gguf_precision.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json
from domaintune.core.outputs import check_output, config_inputs, sibling_output, staged_output
from domaintune.core.run_card import RunCard, read_run_card
from domaintune.data.prepare import read_split
from domaintune.modeling.methods import saved_as
from domaintune.modeling.models import resolve_model, source_of_converted
from domaintune.modeling.render import prompt_ids
from domaintune.modeling.runs import is_adapter_run, load_run_model, run_config

FORMATS = {
    # name: (type of 2-D weights, general.file_type)
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
DEFAULT_TYPES = ("f16", "q8_0")


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half layout to llama.cpp's interleaved rotary pairs."""
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def vocabulary(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens by id and their llama.cpp token types, from a byte-level BPE tokenizer, as llama.cpp's
    convert_hf_to_gguf.py (get_vocab_base) lists them.

    By hand because neither vocab class of the `gguf` package writes that list for SmolLM2's tokenizer:
    gguf.BpeVocab types the 17 special tokens SmolLM2 keeps inside its base vocabulary (ids 0-16,
    <|endoftext|>, <|im_start|>, <|im_end|>, ...) NORMAL (1) where the converter wrote CONTROL (3) into the
    embedded GGUF, and lists no placeholders for embedding rows beyond the tokenizer; gguf.LlamaHfVocab
    refuses a byte-level BPE without byte_fallback ("Cannot find Llama BPE tokenizer") and would write
    tokenizer model 'llama', not 'gpt2'. tests/export/test_gguf.py pins the result to the embedded GGUF's."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"]["type"] != "BPE":
        raise DomaintuneError(f"GGUF export supports byte-level BPE tokenizers, not {state['model']['type']}")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    special = {t["content"] for t in state.get("added_tokens", []) if t.get("special")}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i, f"[PAD{i}]")  # embedding rows beyond the tokenizer: never produced
        tokens.append(token)
        if i not in by_id:
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def special_vocab(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> gguf.SpecialVocab:
    """The merges, the bos/eos/unk/pad ids and the chat template, read by gguf.SpecialVocab from the
    tokenizer's saved files (it reads a folder, not a tokenizer object)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        # The four ids the export has always written; SpecialVocab's default also looks for sep/cls/mask.
        special = gguf.SpecialVocab(folder, load_merges=True, special_token_types=("bos", "eos", "unk", "pad"),
                                    n_vocab=vocab_size)
    # Prompts are tokenized with add_special_tokens=False (modeling/render.py) and the chat template writes
    # its own markers, so llama.cpp must add none either, whatever the tokenizer's post-processor would add.
    special.add_special_token = {"bos": False}
    return special


def write_gguf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path, fmt: str,
               name: str, pre: str, keep_f32: tuple[str, ...] = ()) -> None:
    """Write one GGUF file; tensors whose llama.cpp name starts with a `keep_f32` prefix stay f32."""
    cfg = model.config
    if cfg.model_type != "llama":
        raise DomaintuneError(f"GGUF export supports Llama-architecture models, not '{cfg.model_type}'")
    qtype, file_type = FORMATS[fmt]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    rope = getattr(cfg, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types = vocabulary(tokenizer, cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special_vocab(tokenizer, cfg.vocab_size).add_to_gguf(writer, quiet=True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    tied = getattr(cfg, "tie_word_embeddings", False)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise DomaintuneError(f"GGUF export: no llama.cpp name for tensor '{hf_name}'")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = permute_qk(data, cfg.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_qk(data, cfg.num_key_value_heads)
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32 or gguf_name.startswith(keep_f32):
            writer.add_tensor(gguf_name, data.astype(np.float32))  # norms stay f32, as in llama.cpp's converter
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(gguf_name, data.astype(np.float16))
        else:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@torch.no_grad()
def round_trip(model: PreTrainedModel, folder: Path, filename: str, prompts: list[list[int]]) -> dict:
    """Load the file back with transformers' GGUF loader; compare logits with the source model."""
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename, dtype=torch.float32).eval()
    # Same dtype and attention kernel on both sides, or the figures would measure kernels, not the file.
    for side in (model, loaded):
        if side.dtype != torch.float32 or side.config._attn_implementation != model.config._attn_implementation:
            raise RuntimeError(f"GGUF round trip: {side.dtype}, {side.config._attn_implementation} on one side")
    max_diff, sum_diff, agree, total = 0.0, 0.0, 0, 0
    for ids in prompts:
        x = torch.tensor([ids])
        want, got = model(input_ids=x).logits[0], loaded(input_ids=x).logits[0]
        max_diff = max(max_diff, float((want - got).abs().max()))
        sum_diff += float((want - got).abs().mean()) * len(ids)
        agree += int((want.argmax(-1) == got.argmax(-1)).sum())
        total += len(ids)
    return {"max_abs_logit_diff": round(max_diff, 6), "mean_abs_logit_diff": round(sum_diff / max(total, 1), 6),
            "top1_agreement": round(agree / total, 5), "positions_compared": total}


def run_export(run_dir: str | Path, fmt: str = "gguf", output_dir: str | Path | None = None,
               check_prompts: int = 4, types: tuple[str, ...] = DEFAULT_TYPES, overwrite: bool = False) -> Path:
    """Write RUN-gguf/model-{type}.gguf beside the run (or into `output_dir`) for each of `types`, and
    export_card.json; returns the folder. An existing output folder is replaced only if it is a GGUF
    export, or with `overwrite` (outputs.py)."""
    if fmt != "gguf":
        raise DomaintuneError(f"export --format {fmt}: only 'gguf' is supported")
    unknown = [t for t in types if t not in FORMATS]
    if unknown or not types:
        given = f"'{unknown[0]}' is not a type" if unknown else "no type given"
        raise DomaintuneError(f"export --types: {given}; choose from {', '.join(FORMATS)} (comma-separated)")
    run_dir = Path(run_dir)
    card = read_run_card(run_dir)
    if not isinstance(card, RunCard) or not saved_as(card.method):
        raise DomaintuneError(f"{run_dir}: export needs a training run; this folder is '{card.method}'")
    if card.task == "classification":
        raise DomaintuneError(f"{run_dir}: a classification run (a sequence-classification head) has no GGUF form "
                              "llama.cpp serves; export takes causal-LM runs (train.task sft or causal-lm)")
    cfg = run_config(run_dir)
    out = Path(output_dir) if output_dir else sibling_output(run_dir, "gguf")
    check_output(out, "export", [run_dir, *config_inputs(cfg), cfg.data.output_dir], overwrite, "--out")
    model, tokenizer = load_run_model(str(run_dir), cfg)
    if is_adapter_run(card):
        model = model.merge_and_unload()
    model.eval()
    if model.config.model_type != "llama":
        raise DomaintuneError(f"{run_dir}: GGUF export supports Llama-architecture models, not "
                              f"'{model.config.model_type}'")
    pre = tokenizer_pre(cfg.model.name)
    texts = [r["text"] for r in read_split(cfg.data.output_dir, "test")[:check_prompts]]
    prompts = [prompt_ids(tokenizer, cfg.prompt, t, cfg.evaluate.max_length) for t in texts]
    export_card: dict = {"run": str(run_dir.resolve()), "method": card.method, "tokenizer_pre": pre,
                         "files": {}}
    with staged_output(out, "export", overwrite) as folder:
        for name in types:
            filename = f"model-{name}.gguf"
            write_gguf(model, tokenizer, folder / filename, name, f"{run_dir.name}-{name}", pre)
            entry = {"bytes": os.path.getsize(folder / filename)}
            entry.update(round_trip(model, folder, filename, prompts))
            export_card["files"][filename] = entry
        atomic_write_json(folder / "export_card.json", export_card)
    return out


def tokenizer_pre(model_name: str) -> str:
    """The pre-tokenizer name of the GGUF the base was converted from, so llama.cpp splits text alike."""
    source = source_of_converted(Path(resolve_model(model_name)))
    if source is None:
        return "gpt-2"
    reader = gguf.GGUFReader(source)
    field = reader.get_field("tokenizer.ggml.pre")
    return field.contents() if field is not None else "gpt-2"
