"""The training methods (`train.method`): one registry (registry.py) and one module per family."""

from domaintune.modeling.methods import dpo, full, lora  # noqa: F401  (each registers its methods)
from domaintune.modeling.methods.registry import (
    Method,
    check_method_supported,
    get,
    names,
    register,
    saved_as,
)

__all__ = ["Method", "check_method_supported", "get", "names", "register", "saved_as"]
