"""`domaintune generate [RUN|base] --text TEXT`: one answer from the base model or a run."""

from __future__ import annotations

from domaintune.cli.common import add_verb, split_words
from domaintune.core.errors import DomaintuneError


def register(subparsers) -> None:
    p = add_verb(subparsers, "generate", "answer a text with the base model or a run", reads_config=True,
                 writes=False, words="a run folder or 'base' (default: base), and key=value overrides")
    p.add_argument("--text", required=True, help="the document (or, with --raw, the message)")
    p.add_argument("--raw", action="store_true", help="send --text as a plain chat message")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 means greedy")
    p.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    overrides, targets = split_words(ns)
    cfg = api.load_config(ns.config, overrides)
    if len(targets) > 1:
        raise DomaintuneError("generate takes one target: a run folder or 'base'")
    print(api.run_generate(cfg, ns.text, targets[0] if targets else "base", ns.max_new_tokens,
                           ns.temperature, ns.raw))
