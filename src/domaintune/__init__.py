"""domaintune: adapt a small language model to a domain, with evidence that it got better.

    from domaintune import load_config, run_prepare, run_train, run_evaluate, run_compare

The public names are `domaintune.api.__all__`, the one list; they are loaded on first use, so that
`domaintune --help` and config validation answer without importing torch.
"""

from importlib import import_module

__version__ = "0.1.0"


def __getattr__(name: str):
    if name.startswith("__") and name != "__all__":
        raise AttributeError(f"module 'domaintune' has no attribute {name!r}")
    api = import_module(".api", __name__)
    if name == "__all__" or name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'domaintune' has no attribute {name!r}")
