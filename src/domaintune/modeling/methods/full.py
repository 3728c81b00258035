"""Methods that train the model's own weights and save a whole model: full fine-tuning and layer freezing."""

from __future__ import annotations

from transformers import PreTrainedModel

from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import TrainConfig
from domaintune.modeling.methods.registry import Method, register


def train_every_weight(model: PreTrainedModel, t: TrainConfig) -> PreTrainedModel:
    model.requires_grad_(True)
    return model


def freeze_all_but_top(model: PreTrainedModel, t: TrainConfig) -> PreTrainedModel:
    """Train the top `train.freeze_top_layers` decoder blocks, the final norm and the LM head; freeze the rest.

    With tied embeddings the head is the input embedding matrix, so it is left frozen: training it would
    also change every input embedding, which is not what "freeze the lower layers" promises.
    """
    top = t.freeze_top_layers
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise DomaintuneError(f"train.method=freeze: cannot find the decoder blocks of {type(model).__name__}")
    if top > len(layers):
        raise DomaintuneError(f"train.freeze_top_layers={top} but the model has only {len(layers)} blocks")
    model.requires_grad_(False)
    for block in layers[len(layers) - top:]:
        block.requires_grad_(True)
    norm = getattr(model.model, "norm", None)
    if norm is not None:
        norm.requires_grad_(True)
    if not model.config.tie_word_embeddings:
        model.get_output_embeddings().requires_grad_(True)
    return model


register(Method("freeze", 5e-5, "model", freeze_all_but_top))
register(Method("full", 2e-5, "model", train_every_weight))
