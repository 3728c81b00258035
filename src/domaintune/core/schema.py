"""The one config schema shared by the CLI and the Python API: every section, key, type and default.

Every field is documented where it is declared; the README's config reference is generated from these
descriptions (`domaintune config --reference`). Reading YAML and dotted overrides is config.py's job.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from domaintune.core.errors import DomaintuneError
from domaintune.core.method_names import METHOD_NAMES, method_reference
from domaintune.core.strict import StrictModel
from domaintune.core.sweep_config import SweepConfig, check_search_space
from domaintune.core.validation import describe_validation_error


class Settings(StrictModel):
    """Settings a command takes from its flags rather than the config (serve's limits, compare's timing):
    typed, described and checked like a config section; a bad or unknown one is a DomaintuneError of one
    line naming the key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise DomaintuneError(f"{type(self).__name__}: {describe_validation_error(exc, type(self))}") from None


class ModelConfig(StrictModel):
    name: str = Field(
        "smollm2-135m",
        description="Base model: the alias `smollm2-135m` (embedded SmolLM2-135M-Instruct), a local "
        "HF-format folder, a local `.gguf` file, or a hub id (needs network).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")


class SourceEntry(StrictModel):
    path: str = Field(description="A data file or folder (any format `data.source` accepts).")
    weight: float = Field(
        1.0, gt=0, description="Multiplier for this source's training rows: 0.5 keeps a seeded half, 2 "
        "repeats each row twice (val/test are never reweighted).",
    )


class CleanConfig(StrictModel):
    strip_html: bool = Field(True, description="Remove HTML tags (only tag-shaped `<tag ...>` text).")
    mask_email: bool = Field(False, description="Replace e-mail addresses with `[EMAIL]`.")
    mask_url: bool = Field(False, description="Replace URLs with `[URL]`.")
    mask_phone: bool = Field(
        False, description="Replace phone numbers (Korean and international formats) with `[PHONE]`."
    )


class FilterConfig(StrictModel):
    max_chars: int | None = Field(None, ge=1, description="Drop rows whose cleaned text is longer.")
    min_tokens: int | None = Field(
        None, ge=1, description="Drop rows with fewer tokens (tokenizer of `model.name`)."
    )
    max_tokens: int | None = Field(
        None, ge=1, description="Drop rows with more tokens (tokenizer of `model.name`)."
    )
    max_repeated_ngram_ratio: float | None = Field(
        None, gt=0, le=1, description="Drop rows where repeated word n-grams cover more than this share."
    )
    ngram_size: int = Field(3, ge=1, description="n for the repeated n-gram filter.")
    max_symbol_ratio: float | None = Field(
        None, gt=0, le=1, description="Drop rows whose share of symbol/punctuation characters is higher."
    )
    script: Literal["latin", "hangul", "cjk", "cyrillic", "arabic"] | None = Field(
        None, description="Expected script; rows where it is a minority of letters are dropped."
    )
    min_script_share: float = Field(
        0.5, ge=0, le=1, description="Least share of letters in `script` for a row to be kept."
    )


class DedupConfig(StrictModel):
    exact: bool = Field(True, description="Drop exact duplicates (case and whitespace ignored).")
    near: bool = Field(True, description="Drop near duplicates (MinHash LSH, datasketch).")
    threshold: float = Field(0.8, gt=0, lt=1, description="Jaccard similarity above which rows are near duplicates.")
    num_perm: int = Field(128, ge=16, description="MinHash permutations (more: finer, slower).")
    shingle: Literal["auto", "word", "char"] = Field(
        "auto", description="Shingles: `word` n-grams for spaced languages, `char` n-grams (Korean, CJK); "
        "`auto` picks char when most letters are Hangul/CJK.",
    )
    word_ngram: int = Field(3, ge=1, description="Words per shingle.")
    char_ngram: int = Field(4, ge=1, description="Characters per shingle.")


class ParaphraseConfig(StrictModel):
    instruction: str = Field(
        "Rewrite the following text in other words. Keep its meaning, its tone and its language. "
        "Answer with the rewritten text only.",
        description="What the model is asked before each training row (as the user turn).",
    )
    temperature: float = Field(
        0.0, ge=0, description="0: greedy, one paraphrase per row; above 0: seeded sampling, `copies` per row."
    )
    max_new_tokens: int = Field(
        256, ge=1, description="Longest paraphrase generated; rows with more tokens than this are skipped."
    )
    max_length_ratio: float = Field(
        2.0, gt=0, description="A paraphrase must end within this many times its source's tokens (plus 8), "
        "else it is dropped as too long.",
    )
    batch_size: int = Field(8, ge=1, description="Rows generated together (left-padded).")


class AugmentConfig(StrictModel):
    method: Literal["none", "eda", "paraphrase"] = Field(
        "none", description="`eda`: random word deletion and swap (no model); `paraphrase`: rewrites by "
        "`model.name` through its generate path (slow: one generation per row). Train split only.",
    )
    copies: int = Field(1, ge=1, description="Augmented copies per training row.")
    probability: float = Field(0.1, gt=0, lt=1, description="eda: per-word chance of deletion / share of swaps.")
    max_rows: int | None = Field(
        None, ge=1, description="Augment at most this many training rows (a seeded sample); unset: all.",
    )
    paraphrase: ParaphraseConfig = Field(default_factory=ParaphraseConfig, description="method=paraphrase.")


class DataConfig(StrictModel):
    source: str = Field(
        "drugreviews",
        description="Training data: a named dataset (`drugreviews`, or the Korean reviews `ko_reviews`), or a "
        "CSV/TSV/JSONL/JSON/Parquet/.txt/.md "
        "file, a folder of .txt/.md files, or a folder written by HF `save_to_disk`.",
    )
    sources: list[SourceEntry] = Field(
        default_factory=list, description="More sources mixed in with `source`, each `{path, weight}`."
    )
    test_source: str | None = Field(
        None,
        description="Optional test file kept as it is (only cleaned); if unset the test split is cut "
        "from `source` (the named dataset brings its own test file).",
    )
    format: Literal["classification", "text", "instruction", "chat"] = Field(
        "classification",
        description="`classification`: text plus label; `text`: raw domain text; `instruction`: "
        "instruction/input/output columns; `chat`: a list of {role, content} messages.",
    )
    text_column: str = Field("review", description="Column holding the document text.")
    label_column: str | None = Field("rating", description="Column holding the label (classification).")
    labels: list[str] | None = Field(
        None, description="Label options in a fixed order; taken from the training data when unset. When set, "
        "rows whose label (after `label_map`) is not among them are malformed rows, and labels that look like "
        "typos are not flagged.",
    )
    label_map: dict[str, str] | None = Field(
        None, description="Raw label -> label (e.g. `{'1': negative}`); raw labels not in it are bad rows, so a map "
        "that fixes a typo (`positve: positive`) lists the right labels too (`positive: positive`).",
    )
    instruction_column: str = Field("instruction", description="Instruction column (format instruction).")
    input_column: str = Field("input", description="Optional input column (format instruction).")
    output_column: str = Field("output", description="Answer column (format instruction).")
    messages_column: str = Field("messages", description="Messages column (format chat).")
    group_column: str | None = Field(
        None, description="Rows sharing this column's value land in one split (e.g. `drugName`)."
    )
    text_unit: Literal["file", "paragraph", "line"] = Field(
        "file", description=".txt/.md input: one document per file, per blank-line paragraph, or per line."
    )
    encoding: str = Field(
        "auto", description="Text encoding of input files; `auto`: UTF-8 (BOM allowed), else cp949/EUC-KR, "
        "else charset-normalizer's guess.",
    )
    strict: bool = Field(False, description="Stop at the first malformed row (naming file and line).")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of rows for validation.")
    test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of rows for test when no test file is given."
    )
    review_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of rows cut as a `review` split, the prompts of `serve`'s "
        "review page (held out from test and val); 0: the page draws from val.",
    )
    min_chars: int = Field(1, ge=1, description="Rows whose cleaned text is shorter are dropped.")
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Text cleaning.")
    filters: FilterConfig = Field(default_factory=FilterConfig, description="Noise filters.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Deduplication.")
    remove_leaks: bool = Field(
        True, description="Remove train rows that (near-)duplicate a val/test row; if false only report them."
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Training-data augmentation.")
    num_proc: int | None = Field(
        None, ge=1, description="Worker processes for the heavy steps (filters + exact hashes, MinHash, token "
        "counts); unset: one per CPU core. A step uses a worker per 10,000 rows at most: small data stays in "
        "one process.",
    )
    output_dir: str = Field("prepared/drugreviews", description="Where `prepare` writes the splits.")


class PromptConfig(StrictModel):
    instruction: str = Field(
        "Classify the sentiment of this drug review as negative, neutral or positive. "
        "Answer with one word.",
        description="Instruction placed before the document in the user turn (sft and label scoring).",
    )
    system: str | None = Field(
        None, description="System message; unset keeps the chat template's own default."
    )


class LoraSettings(StrictModel):
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Dropout on the LoRA input (peft's and torchtune's default is 0 too). Above 0, every adapted "
        "layer keeps a dropped-out copy of its input for backward: a LoRA step without recomputation peaked at "
        "5.13 GiB with 0.05 and 3.53 GiB with 0 (bench/lora_memory.py).",
    )
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Modules to adapt: `all-linear` or a list of module names (q_proj, v_proj, ...).",
    )
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r.")


class DpoSettings(StrictModel):
    data: str = Field(
        "feedback/preference.jsonl",
        description="method=dpo: preference JSONL (`prompt`, `chosen`, `rejected`) as written by "
        "`domaintune feedback export`.",
    )
    beta: float = Field(0.1, gt=0, description="method=dpo: how far from the base model the policy may move "
                        "(higher: less).")


class TrainConfig(StrictModel):
    method: str = Field("lora", description=method_reference())
    freeze_top_layers: int = Field(2, ge=1, description="method=freeze: how many top transformer blocks train.")
    task: Literal["sft", "causal-lm", "classification"] = Field(
        "sft",
        description="`sft`: chat-template prompt (instruction + document) and answer (label), or the "
        "assistant turns of instruction/chat data; `causal-lm`: raw document text; `classification`: a "
        "sequence-classification head (encoders such as BERT/KcBERT, or decoders).",
    )
    loss_on: Literal["answer", "all"] = Field(
        "answer", description="sft only: loss on the answer tokens (`answer`) or the whole sequence."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (lora and dpo).")
    dpo: DpoSettings = Field(default_factory=DpoSettings, description="DPO settings.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate; unset: the method's default (2e-4 for the LoRA adapters, "
        "5e-5 for freeze and dpo, 2e-5 for full).",
    )
    batch_size: int = Field(8, ge=1, description="Sequences per device step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps per optimizer step.")
    max_length: int = Field(256, ge=8, description="Token budget per sequence; documents are cut to fit.")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="Share of steps for LR warm-up.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR schedule.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="`auto`: bf16 autocast where the hardware supports it, else fp32."
    )
    max_train_rows: int | None = Field(
        None, ge=1, description="Use at most this many training rows (quick runs)."
    )
    logging_steps: int = Field(5, ge=1, description="Log loss and throughput every N steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate on val every N steps (unset: once, at the end)."
    )
    save_steps: int | None = Field(
        None, ge=1, description="Write a resumable checkpoint every N steps (unset: no checkpoints)."
    )
    save_total_limit: int = Field(2, ge=2, description="Checkpoints kept: the best and the most recent ones.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without a better `select_by` figure (needs "
        "eval_steps)."
    )
    select_by: Literal["val_loss", "val_accuracy", "val_macro_f1"] = Field(
        "val_loss",
        description="What picks the best checkpoint (restored at the end when save_steps is set) and drives early "
        "stopping. Labelled data is also scored on val at every evaluation: accuracy and macro-F1 from the head's "
        "predictions (classification) or from each label's log-likelihood as the answer (sft), as `evaluate` "
        "scores test. `val_accuracy` and `val_macro_f1` need labelled data and eval_steps.",
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="classification only: weight the head's cross-entropy per class; `balanced` weighs each "
        "class by rows / (classes x its rows) in the training split (scikit-learn's rule), so rare classes count "
        "as much as common ones. Val loss is weighted the same way.",
    )
    balanced_sampler: bool = Field(
        False,
        description="sft on labelled data: draw training rows with replacement, each label equally often (in "
        "expectation), instead of `sampling`'s order; an epoch still draws as many rows as the split holds. Not "
        "with packing.",
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="Recompute each block's activations in backward instead of keeping them (slower: a LoRA step "
        "took 2.6x as long, bench/train_speed.py); on a CPU, glibc then also returns freed activations at once. "
        "`auto`: only when the step's estimated peak (`domaintune plan`: weights, gradients, optimizer state, "
        "activations of batch_size rows of max_length tokens) plus 15% would not fit the memory available; the "
        "decision and the estimate go to the run card's `memory_plan`. true/false force it.",
    )
    packing: bool | None = Field(
        None,
        description="Pack whole examples into rows of `max_length` tokens, each attending only to itself, so no "
        "step pays for padding; a longer causal-lm document is split, not cut. Unset: on for causal-lm; off for "
        "sft, where it would change the examples per step (group_by_length already pads little).",
    )
    sampling: Literal["group_by_length", "random", "sequential"] = Field(
        "group_by_length",
        description="Training order: `group_by_length` batches rows of similar length (least padding); "
        "`random`; `sequential` keeps the file order.",
    )

    @field_validator("method")
    @classmethod
    def _method_is_known(cls, name: str) -> str:
        if name not in METHOD_NAMES:
            close = difflib.get_close_matches(name, METHOD_NAMES, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"key 'train.method' expects one of {', '.join(METHOD_NAMES)}, got {name!r}{hint}")
        return name

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _unset_means_auto(cls, value: object) -> object:
        return "auto" if value is None else value  # run folders written before `auto` saved null

    @model_validator(mode="after")
    def _schedules_fit(self) -> TrainConfig:
        if self.early_stopping_patience and not self.eval_steps:
            raise ValueError("train.early_stopping_patience needs train.eval_steps")
        if self.eval_steps and self.save_steps and self.save_steps % self.eval_steps:
            raise ValueError("train.save_steps must be a multiple of train.eval_steps to keep the best checkpoint")
        if self.select_by != "val_loss" and not self.eval_steps:
            raise ValueError(f"train.select_by={self.select_by} needs train.eval_steps (val is scored there)")
        if self.select_by != "val_loss" and self.task == "causal-lm":
            raise ValueError(f"train.select_by={self.select_by} needs task sft or classification (labels to score)")
        if self.class_weights != "none" and self.task != "classification":
            raise ValueError("train.class_weights applies to task=classification; for sft use "
                             "train.balanced_sampler")
        if self.balanced_sampler and self.task != "sft":
            raise ValueError("train.balanced_sampler applies to task=sft; for classification use "
                             "train.class_weights")
        if self.balanced_sampler and self.packing:
            raise ValueError("train.balanced_sampler draws single rows: set train.packing=false")
        return self
    output_dir: str = Field("runs/lora", description="Run folder to write.")


class EvaluateConfig(StrictModel):
    max_examples: int | None = Field(None, ge=1, description="Evaluate at most this many test rows.")
    batch_size: int = Field(8, ge=1, description="Sequences per forward pass.")
    max_length: int = Field(256, ge=8, description="Token budget per evaluated sequence (a perplexity window).")
    perplexity_scope: Literal["whole_document", "first_window"] = Field(
        "whole_document",
        description="Perplexity over every token of each document, in overlapping windows of `max_length` "
        "(`stride` apart), or `first_window`: only each document's first `max_length` tokens (the figure "
        "before windows; metrics.json's `tokens_scored` / `tokens_in_split` shows the coverage).",
    )
    stride: int | None = Field(
        None, ge=1, description="New tokens per perplexity window: each later window re-reads the "
        "`max_length - stride` tokens before them as context only, so every token after a document's first "
        "is scored once (at `stride = max_length` each window's first token goes unscored). Unset: max_length // 2.",
    )
    base_output_dir: str = Field(
        "runs/base", description="Where `evaluate` writes the base model's metrics."
    )
    general_text: str | None = Field(
        None,
        description="Forgetting check: a text file (one passage per line) scored for perplexity by every "
        "model; unset: the general English passages shipped with domaintune. Empty string: skip.",
    )
    samples: int = Field(3, ge=0, description="Test rows answered greedily and kept as generation samples.")
    sample_max_new_tokens: int = Field(24, ge=1, description="Token budget of each generation sample.")
    baseline_output_dir: str = Field(
        "runs/tfidf", description="Where `domaintune baseline` writes the TF-IDF + logistic regression metrics."
    )
    bootstrap_resamples: int = Field(
        1000, ge=1000, description="Bootstrap resamples behind every 95% interval and paired test (seeded by "
        "`seed`); 1,000 keeps the Monte Carlo error of a 2.5% quantile small beside the interval itself.",
    )

    @model_validator(mode="after")
    def _stride_fits_window(self) -> EvaluateConfig:
        if self.stride is not None and self.stride > self.max_length:
            raise ValueError(f"evaluate.stride ({self.stride}) must be at most evaluate.max_length "
                             f"({self.max_length}): a longer stride would skip tokens")
        return self

    @property
    def window_stride(self) -> int:
        return self.stride or self.max_length // 2


class Config(StrictModel):
    seed: int = Field(42, description="Seed for splits, initialisation and data order.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; unset: all cores.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data and splits.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt rendering.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation.")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="`domaintune sweep` (sweep_config.py).")
    _source_file: str | None = PrivateAttr(None)

    @property
    def source_file(self) -> str | None:
        """The YAML file this config was loaded from: an input that no output may replace."""
        return self._source_file

    def __eq__(self, other: object) -> bool:
        """Equal values make equal configs, wherever each was read from (pydantic would compare `_source_file`)."""
        if not isinstance(other, Config):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    @model_validator(mode="after")
    def _sweep_space_is_searchable(self) -> Config:
        if self.sweep.space:
            check_search_space(self)
        return self
