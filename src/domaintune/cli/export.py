"""`domaintune export RUN`: a run's model as GGUF files for llama.cpp and Ollama."""

from __future__ import annotations

from domaintune.cli.common import add_verb, targets_only
from domaintune.core.errors import DomaintuneError

USAGE = "export takes one run folder (and --format, --out)"


def register(subparsers) -> None:
    p = add_verb(subparsers, "export",
                 "write a run's model as GGUF (f16 and q8_0, or --types) for llama.cpp and Ollama",
                 reads_config=False, writes=True, words="the run folder")
    p.add_argument("--format", default="gguf", choices=["gguf"], help="file format")
    p.add_argument("--out", help="output folder (default: RUN-gguf, beside the run)")
    p.add_argument("--types", default="f16,q8_0",
                   help="comma-separated GGUF types: f16, q8_0, f32 (f32 reads back with exact logits)")
    p.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api
    from domaintune.core.io import read_json

    runs = targets_only(ns, USAGE)
    if len(runs) != 1:
        raise DomaintuneError(USAGE)
    types = tuple(t.strip() for t in ns.types.split(",") if t)
    out = api.run_export(runs[0], ns.format, ns.out, types=types, overwrite=ns.overwrite)
    print(read_json(out / "export_card.json"))
