"""`domaintune config`: the resolved config as YAML, or the reference of every key."""

from __future__ import annotations

from domaintune.cli.common import add_verb, overrides_only


def register(subparsers) -> None:
    p = add_verb(subparsers, "config", "print the resolved config (or the config reference)", reads_config=True,
                 writes=False)
    p.add_argument("--reference", action="store_true", help="print every key with its default and help")
    p.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    cfg = api.load_config(ns.config, overrides_only(ns))  # validated even for --reference: a typo still fails
    print("\n".join(api.config_reference()) if ns.reference else api.config_to_yaml(cfg), end="\n")
