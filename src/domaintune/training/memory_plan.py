"""A training step's peak memory, estimated from the model's config.json before any weight is loaded, and
whether activations must be recomputed for the run to fit (`train.gradient_checkpointing: auto`).

The estimate, in bytes, for `train.batch_size` rows of `train.max_length` tokens (the largest batch a run can
meet), the loss at every position, or where it is known to be fewer, at those only (a classifier: one per
row; answer-only SFT on labelled data: the longest label's answer tokens, `scored_per_row`):
  weights      every parameter x 4 (models are loaded in fp32; bf16 and fp16 runs autocast)
  gradients    trainable parameters x 4
  optimizer    trainable parameters x 8 (AdamW's two moments)
  activations  what autograd keeps for backward: per token and decoder layer `LAYER_BYTES` (counted with
               torch's saved-tensor hooks on transformers' Llama layer, a test checks it: the norms, q/k/v,
               attention output, the MLP's four intermediate-wide tensors), LoRA's rank-wide outputs, under
               autocast the 16-bit copy of each weight a matmul keeps, and for packed rows the attention mask;
               with recomputation each layer keeps only its input, and one layer's activations live again
               while it is recomputed. Plus the logits: `LOGIT_BYTES` per scored position and vocabulary entry
               at the start of backward (the log-softmax kept for backward, its gradient, the logits' gradient)
  overlap      minus the gradients (full, freeze): backward writes them as it frees each layer's activations,
               so the step holds the larger of the two, not their sum
  allocator    on a CPU without recomputation, the freed blocks glibc keeps for reuse (freed_memory_policy):
               measured, `ALLOCATOR_SLACK` of the layer activations (less where gradients and AdamW state
               are allocated into the holes freed activations leave)
  runtime      measured: the imports, tokenizer and data (RSS before training, less the weights)
The measured constants come from bench/memory_plan.py (random-weight SmolLM2 135M to 1.7B, LoRA and full,
with and without recomputation: each estimate within 15% of the measured peak RSS; BENCHMARKS.md). The
trainable-parameter count comes from the method's own wrapping of the model built on torch's meta device
(shapes only, no memory).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from domaintune.core.data_card import read_data_card
from domaintune.core.errors import DomaintuneError
from domaintune.core.runtime import KEEP_FOR_REUSE, memory_budget, resolve_precision
from domaintune.core.schema import Config, TrainConfig
from domaintune.modeling import methods
from domaintune.modeling.models import load_tokenizer, resolve_model
from domaintune.modeling.render import answer_ids

GIB = 1 << 30
MARGIN = 0.15  # `auto` keeps activations only when the estimate plus 15% fits: the bench's error bound
# Bytes per token and decoder layer: (x hidden, x KV width, x intermediate, x heads, constant); "weights" where
# the layer's own weights train (full, freeze), "adapter" where only LoRA matrices do (the norms then keep less).
LAYER_BYTES = {
    ("fp32", "weights"): (32, 8, 16, 4, 8),
    ("fp32", "adapter"): (24, 8, 16, 4, 8),
    ("16-bit", "weights"): (30, 4, 8, 4, 8),
    ("16-bit", "adapter"): (24, 4, 8, 4, 8),
}
HEAD_BYTES = {"weights": 13, "adapter": 1}  # x hidden per token: the final norm and the head's input
LOGIT_BYTES = {"fp32": 12, "16-bit": 14}  # per scored position and vocabulary entry (see the docstring)
RUNTIME_BYTES = 670 << 20  # CPU: RSS before training less the weights (imports, tokenizer, data; bench/memory_plan.py)
# glibc's resident heap beyond the live tensors on the fast path, as a share of the layer activations; fitted
# to bench/memory_plan.py's peaks (LoRA 135M-1.7B: 0.93; full 135M and 360M: 0.27 and 0.96, 0.5 between them)
ALLOCATOR_SLACK = {"adapter": 0.93, "weights": 0.5}
CUDA_RUNTIME_BYTES = 1 << 30  # CUDA context, cuBLAS workspace and the caching allocator's slack: not measured


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a model: parameter counts for the chosen method, and layer widths."""

    parameters: int
    trainable: int
    linear_parameters: int  # weights that autocast copies to 16 bits for the matmuls
    hidden: int
    layers: int
    trained_layers: int  # layers whose activations backward needs (freeze: only the top ones)
    heads: int
    kv_width: int
    intermediate: int
    outputs: int  # logits per scored position: the vocabulary, or a classifier's labels
    adapter_rank_sum: int  # per layer: the LoRA ranks of its adapted modules (0: no adapter)
    adapter_inputs: int  # per layer: the input widths of its adapted modules (dropout keeps a copy of each)


@dataclass(frozen=True)
class MemoryPlan:
    method: str
    batch_size: int
    max_length: int
    precision: str
    device: str
    recompute: bool
    decided_by: str  # "auto" (this plan chose) or "config" (train.gradient_checkpointing set)
    components: dict[str, int]  # weights, gradients, optimizer, activations, runtime
    total: int
    other_total: int  # the same step with the other choice of recomputation
    budget: int | None  # memory this run may use: available now plus what this process already holds
    scored_per_row: int  # positions where the LM head runs, per row

    @property
    def fits(self) -> bool:
        return self.budget is None or self.total <= self.budget

    def as_dict(self) -> dict:
        """The run card's `memory_plan`: the fields, sizes named `*_bytes`, and whether the step fits."""
        sizes = {"components": "components_bytes", "total": "total_bytes", "other_total": "other_total_bytes",
                 "budget": "budget_bytes"}
        return {sizes.get(key, key): value for key, value in asdict(self).items()} | {"fits": self.fits}

    def check_fits(self) -> None:
        """Stop before anything is loaded when the step cannot fit; the message says what to lower."""
        if self.fits:
            return
        levers = "lower train.batch_size (raise train.grad_accum to keep the batch) or train.max_length"
        if not self.recompute and self.other_total < 0.95 * self.total:
            levers += f", set train.gradient_checkpointing=true ({self.other_total / GIB:.1f} GiB)"
        if self.method in ("full", "freeze"):
            levers += ", or use train.method=lora"
        name, size = max(self.components.items(), key=lambda item: item[1])
        raise DomaintuneError(
            f"a training step needs about {self.total / GIB:.1f} GiB ({name} {size / GIB:.1f} GiB the most) but "
            f"{self.budget / GIB:.1f} GiB is available: {levers}; see docs/troubleshooting.md#out-of-memory"
        )

    def table(self) -> str:
        """`domaintune plan`'s answer: one line per component, the total, and whether it fits."""
        lines = [f"{self.method}, {self.batch_size} rows x {self.max_length} tokens (loss at {self.scored_per_row} "
                 f"per row), {self.precision} on {self.device}",
                 f"recompute activations: {'yes' if self.recompute else 'no'} ({self._why()})"]
        lines += [f"  {name:<12}{size / GIB:8.2f} GiB" for name, size in self.components.items()]
        lines.append(f"  {'total':<12}{self.total / GIB:8.2f} GiB")
        if self.budget is not None:
            lines.append(f"  {'available':<12}{self.budget / GIB:8.2f} GiB: {'fits' if self.fits else 'does not fit'}")
        lines.append("overlap: gradients written where backward frees activations; allocator: freed memory glibc "
                     "keeps for reuse (CPU, without recomputation); runtime: imports, tokenizer, data")
        return "\n".join(lines)

    def summary(self) -> str:
        parts = ", ".join(f"{name} {size / GIB:.2f}" for name, size in self.components.items())
        room = f" of {self.budget / GIB:.1f} GiB available" if self.budget is not None else ""
        return (f"memory plan: {self.method}, {self.batch_size} x {self.max_length} tokens, {self.precision} on "
                f"{self.device}: {self.total / GIB:.2f} GiB ({parts}){room}; recompute activations: "
                f"{'yes' if self.recompute else 'no'} ({self._why()})")

    def _why(self) -> str:
        if self.decided_by == "config":
            return "train.gradient_checkpointing"
        if self.recompute:
            return f"without it {self.other_total / GIB:.2f} GiB, more than the memory available less {MARGIN:.0%}"
        return f"fits with {MARGIN:.0%} to spare" if self.budget is not None else "memory available unknown"


def run_plan(cfg: Config) -> MemoryPlan:
    """`domaintune plan`: the memory plan of `cfg`'s training step on this machine, without loading weights."""
    return plan_memory(cfg, resolve_precision(cfg.train.precision))


def plan_memory(cfg: Config, precision: str, budget: int | None = None) -> MemoryPlan:
    """The plan for `cfg` at `precision` (runtime.resolve_precision's answer); `budget` defaults to this
    machine's (runtime.memory_budget). Reads config.json only."""
    t = cfg.train
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = model_shape(cfg)
    scored = scored_per_row(cfg)
    budget = memory_budget() if budget is None else budget
    fast, lean = (estimate(shape, t, precision, device, recompute, scored) for recompute in (False, True))
    if isinstance(t.gradient_checkpointing, bool):
        recompute, decided_by = t.gradient_checkpointing, "config"
    else:
        recompute = budget is not None and sum(fast.values()) * (1 + MARGIN) > budget
        decided_by = "auto"
    chosen, other = (lean, fast) if recompute else (fast, lean)
    return MemoryPlan(t.method, t.batch_size, t.max_length, precision, device, recompute, decided_by, chosen,
                      sum(chosen.values()), sum(other.values()), budget, scored)


def estimate(shape: ModelShape, t: TrainConfig, precision: str, device: str, recompute: bool,
             scored_per_row: int) -> dict[str, int]:
    """Bytes per component of the step's peak (module docstring), for one choice of recomputation."""
    kind = "fp32" if precision == "fp32" else "16-bit"
    trains = "adapter" if shape.adapter_rank_sum else "weights"
    rows = t.batch_size * (2 if methods.get(t.method).trains_on == "preferences" else 1)  # chosen + rejected
    tokens = rows * t.max_length
    scored = rows * scored_per_row
    per_layer = tokens * _layer_bytes(shape, t, kind, trains)
    kept = 1 if recompute else shape.trained_layers  # layers whose activations are alive at once
    layers = kept * per_layer
    if recompute:  # every layer keeps its input for the recomputation
        layers += shape.trained_layers * tokens * shape.hidden * 4
    if kind == "16-bit":  # the 16-bit copies of the weights that autocast hands the matmuls
        layers += 2 * shape.linear_parameters * kept // max(shape.layers, 1)
    if t.task != "classification" and _packs(t):  # packed rows: SDPA gets a (rows, 1, L, L) mask per layer
        layers += kept * rows * t.max_length ** 2 * (4 if kind == "fp32" else 2)
    activations = layers + tokens * shape.hidden * HEAD_BYTES[trains] + scored * shape.outputs * LOGIT_BYTES[kind]
    gradients, optimizer = shape.trainable * 4, shape.trainable * 8
    # A full step's weight gradients take the place of activations freed layer by layer in backward.
    overlap = min(gradients, activations) if trains == "weights" else 0
    return {
        "weights": _weight_bytes(shape, t),
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": activations,
        "overlap": -overlap,
        "allocator": _kept_by_malloc(shape, tokens, per_layer * kept, trains) if device == "cpu" and not recompute
        else 0,
        "runtime": CUDA_RUNTIME_BYTES if device == "cuda" else RUNTIME_BYTES,
    }


def _weight_bytes(shape: ModelShape, t: TrainConfig) -> int:
    """fp32, except under QLoRA: its base's linear weights are 4-bit NF4 (half a byte; not measured here, as
    QLoRA needs a GPU); the embeddings, norms and head stay as loaded."""
    if methods.get(t.method).load_base is None:
        return shape.parameters * 4
    return shape.linear_parameters // 2 + (shape.parameters - shape.linear_parameters) * 4


def _kept_by_malloc(shape: ModelShape, tokens: int, layer_activations: int, trains: str) -> int:
    """What glibc keeps resident beyond the live tensors on the fast path (runtime.freed_memory_policy keeps
    freed blocks below KEEP_FOR_REUSE for reuse): measured, ALLOCATOR_SLACK of the layer activations served
    from its heap (a tensor of KEEP_FOR_REUSE or more is a mapping of its own, returned when freed). Where the
    weights train, their gradients and AdamW state fill some of the holes; how many depends on sizes and
    order that no formula here follows, hence the one fitted share."""
    if tokens * shape.intermediate * 4 >= KEEP_FOR_REUSE:  # the widest activations are mapped, not heap
        layer_activations = layer_activations * shape.hidden // (shape.hidden + shape.intermediate)
    if tokens * shape.hidden * 4 >= KEEP_FOR_REUSE:
        return 0
    return int(ALLOCATOR_SLACK[trains] * layer_activations)


def _layer_bytes(shape: ModelShape, t: TrainConfig, kind: str, trains: str) -> int:
    hidden, kv, intermediate, heads, constant = LAYER_BYTES[kind, trains]
    element = 4 if kind == "fp32" else 2
    adapter = shape.adapter_rank_sum * element
    if shape.adapter_rank_sum and t.lora.dropout > 0:
        adapter += shape.adapter_inputs * 4  # dropout's copy of each adapted module's input (fp32 stream)
    return (hidden * shape.hidden + kv * shape.kv_width + intermediate * shape.intermediate + heads * shape.heads
            + constant + adapter)


def scored_per_row(cfg: Config) -> int:
    """Positions per row where the LM head runs (training/batching.py computes logits only where a loss is
    taken): every one, except for a classifier (one) and answer-only SFT on labelled data prepared already
    (the longest label's answer tokens, end of turn included)."""
    t = cfg.train
    if t.task == "classification":
        return 1
    card = Path(cfg.data.output_dir) / "data_card.json"
    if t.task != "sft" or t.loss_on != "answer" or not card.is_file():
        return t.max_length
    labels = read_data_card(cfg.data.output_dir).labels
    if not labels:  # instruction or chat data: answers as long as the row allows
        return t.max_length
    tokenizer = load_tokenizer(resolve_model(cfg.model.name), cfg.model.revision)
    return min(t.max_length, max(len(answer_ids(tokenizer, cfg.prompt, label)) for label in labels))


def _packs(t: TrainConfig) -> bool:
    return t.packing if t.packing is not None else t.task == "causal-lm"


def model_shape(cfg: Config) -> ModelShape:
    """The shapes of `cfg.model` wrapped for `cfg.train.method`, from its config.json on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    t = cfg.train
    source = resolve_model(cfg.model.name)
    try:
        config = AutoConfig.from_pretrained(source, revision=cfg.model.revision)
    except (OSError, ValueError) as exc:
        raise DomaintuneError(f"could not read the config.json of '{source}': {str(exc).splitlines()[0]}") from None
    with torch.device("meta"):  # shapes only: no parameter takes memory
        if t.task == "classification":
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
        parameters = sum(p.numel() for p in model.parameters())
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        method = methods.get(t.method)
        if method.saves == "adapter":  # every adapter method trains LoRA-shaped matrices (PiSSA's SVD needs data)
            from domaintune.modeling.methods.lora import wrap_lora

            model = wrap_lora(model, t)
        else:
            model = method.wrap(model, t)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layers = int(getattr(config, "num_hidden_layers", 1))
    hidden = int(config.hidden_size)
    heads = int(getattr(config, "num_attention_heads", 1))
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    adapted = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "in_features")]
    return ModelShape(
        parameters=parameters,
        trainable=trainable,
        linear_parameters=linear,
        hidden=hidden,
        layers=layers,
        trained_layers=t.freeze_top_layers if t.method == "freeze" else layers,
        heads=heads,
        kv_width=int(getattr(config, "num_key_value_heads", None) or heads) * head_dim,
        intermediate=int(getattr(config, "intermediate_size", None) or 4 * hidden),
        outputs=int(config.num_labels) if t.task == "classification" else int(config.vocab_size),
        adapter_rank_sum=len(adapted) * t.lora.r // layers,
        adapter_inputs=sum(m.in_features for m in adapted) // layers,
    )
