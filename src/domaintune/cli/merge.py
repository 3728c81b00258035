"""`domaintune merge RUN`: a LoRA run merged into a plain HF model folder."""

from __future__ import annotations

from domaintune.cli.common import add_verb, targets_only
from domaintune.core.errors import DomaintuneError

USAGE = "merge takes one LoRA run folder (and --out)"


def register(subparsers) -> None:
    p = add_verb(subparsers, "merge", "merge a LoRA run into a plain HF model folder (safetensors)",
                 reads_config=False, writes=True, words="the LoRA run folder")
    p.add_argument("--out", help="output folder (default: RUN-merged, beside the run)")
    p.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    runs = targets_only(ns, USAGE)
    if len(runs) != 1:
        raise DomaintuneError(USAGE)
    print(f"merged model written to {api.run_merge(runs[0], ns.out, overwrite=ns.overwrite)}")
