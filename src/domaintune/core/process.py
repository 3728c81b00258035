"""Process-wide settings: made once by the command line's entry (`setup()`), never by a library function.

A stage that needs such a setting for its own run (torch's thread count, Optuna's log level) sets it with
a context manager here and puts back what it found, so a program that calls `run_evaluate` or
`run_sweep` keeps its own settings. torch and optuna are imported only when used: `domaintune --help`
should not pay for them.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

LOG_FORMAT = "domaintune: %(name)s: %(levelname)s: %(message)s"  # the shape of errors.warn's lines

Stage = TypeVar("Stage", bound=Callable)


def setup() -> None:
    """What the command line sets once: library log records (Python's `logging`) go to stderr as one line
    each, in the shape of domaintune's own warnings, from WARNING up. A program using the Python API
    calls this only if it wants the same; domaintune's functions never configure logging."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """torch's CPU threads set to `threads` (None: unchanged) inside the block, then back to what they were."""
    import torch

    before = torch.get_num_threads()
    if threads and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def config_threads(stage: Stage) -> Stage:
    """Run `stage(cfg, ...)` under `torch_threads(cfg.threads)`: the config's threads for this call only."""

    @functools.wraps(stage)
    def with_threads(cfg, *args, **kwargs):
        with torch_threads(cfg.threads):
            return stage(cfg, *args, **kwargs)

    return with_threads  # type: ignore[return-value]


@contextmanager
def optuna_verbosity(level: int) -> Iterator[None]:
    """Optuna's log level inside the block (its root logger is process-wide), then the one it had."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
