"""`domaintune train`: train LoRA or full fine-tuning into a run folder."""

from __future__ import annotations

from domaintune.cli.common import add_verb, overrides_only


def register(subparsers) -> None:
    parser = add_verb(subparsers, "train", "train LoRA or full fine-tuning into a run folder",
                      reads_config=True, writes=True)
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    cfg = api.load_config(ns.config, overrides_only(ns))
    print(f"run folder written to {api.run_train(cfg, resume=ns.resume, overwrite=ns.overwrite)}")
