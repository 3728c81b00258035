"""The command line: builds the parser from the verb modules, makes the process-wide settings once, and
turns a DomaintuneError into one line on stderr. Each verb lives in its own module (`cli/<verb>.py`):
it registers its arguments and calls one function of `domaintune.api`.
"""

from __future__ import annotations

import argparse
import sys

from domaintune.cli import (
    baseline,
    compare,
    config,
    demo,
    evaluate,
    export,
    feedback,
    generate,
    merge,
    plan,
    prepare,
    serve,
    sweep,
    train,
)
from domaintune.cli.common import OUTPUT_RULE
from domaintune.core.errors import DomaintuneError
from domaintune.core.process import setup

VERB_MODULES = (prepare, plan, train, evaluate, baseline, compare, merge, export, generate, demo, config, serve,
                feedback, sweep)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, without running anything (tests/docs checks the guides' commands with it)."""
    parser = argparse.ArgumentParser(prog="domaintune", description="Adapt a small language model to a domain.",
                                     epilog=OUTPUT_RULE)
    verbs = parser.add_subparsers(dest="verb", required=True)
    for module in VERB_MODULES:
        module.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    setup()
    try:
        ns.run(ns)  # verbs import the API lazily: `--help` and config errors answer without loading torch
    except DomaintuneError as exc:
        print(f"domaintune {ns.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"domaintune {ns.verb}: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
