"""`domaintune merge RUN`: fold a LoRA adapter into its base -> a plain HF model folder (safetensors).

The merged folder loads with `AutoModelForCausalLM.from_pretrained` alone (no peft) and computes the
same function as base + adapter; it serves at the base model's speed.
"""

from __future__ import annotations

from pathlib import Path

from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json
from domaintune.core.outputs import check_output, config_inputs, sibling_output, staged_output
from domaintune.core.run_card import read_run_card
from domaintune.modeling.models import load_causal_lm, load_tokenizer
from domaintune.modeling.runs import is_adapter_run, load_run_model, run_config
from domaintune.modeling.seqcls import load_classifier


def run_merge(run_dir: str | Path, output_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write RUN-merged beside the run (or `output_dir`) holding the merged model, its tokenizer and provenance.

    An existing output folder is replaced only if it is a merged model, or with `overwrite` (outputs.py).
    """
    run_dir = Path(run_dir)
    card = read_run_card(run_dir)
    if not is_adapter_run(card):
        raise DomaintuneError(
            f"{run_dir}: merge needs a LoRA run; this one is '{card.method}' (its model/ is already plain)"
        )
    cfg = run_config(run_dir)
    out = Path(output_dir) if output_dir else sibling_output(run_dir, "merged")
    check_output(out, "merged", [run_dir, *config_inputs(cfg)], overwrite, "--out")
    model, tokenizer = load_run_model(str(run_dir), cfg)
    merged = model.merge_and_unload()
    with staged_output(out, "merged", overwrite) as folder:
        merged.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        atomic_write_json(folder / "domaintune_merged_from.json",
                          {"run": str(run_dir.resolve()), "base_model": cfg.model.name})
    return out


def load_merged(folder: str | Path, labels: list[str] | None = None) -> tuple:
    """A folder `run_merge` wrote, as a plain model and its tokenizer: a causal LM, or with the run's
    `labels` a sequence classifier."""
    model = load_classifier(str(folder), labels) if labels else load_causal_lm(str(folder))
    return model, load_tokenizer(str(folder))
