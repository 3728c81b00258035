"""domaintune: adapt a small language model to a domain, with evidence that it got better.

    from domaintune import load_config, run_prepare, run_train, run_evaluate, run_compare
"""

from importlib import import_module

__version__ = "0.1.0"
__all__ = [
    "Config",
    "DomaintuneError",
    "ServeSettings",
    "config_reference",
    "config_to_yaml",
    "demo_config",
    "load_config",
    "run_baseline",
    "run_compare",
    "run_demo",
    "run_evaluate",
    "run_feedback_export",
    "run_export",
    "run_generate",
    "run_merge",
    "run_prepare",
    "run_serve",
    "run_sweep",
    "run_train",
]


def __getattr__(name: str):
    # Lazy, so that `domaintune --help` and config validation answer without importing torch.
    if name in __all__:
        return getattr(import_module(".api", __name__), name)
    raise AttributeError(f"module 'domaintune' has no attribute {name!r}")
