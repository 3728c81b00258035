"""What every verb module shares: how a verb's parser starts, and how its positional words split."""

from __future__ import annotations

import argparse

from domaintune.core.errors import DomaintuneError

OUTPUT_RULE = ("An existing output folder is replaced only when domaintune wrote it as the same kind of output; "
               "anything else there is refused unless --overwrite is given, and an output that is, holds or "
               "lies inside an input is always refused.")
OVERRIDES_HELP = "key=value config overrides (train.lora.r=16)"


def add_verb(subparsers, name: str, help: str, *, reads_config: bool, writes: bool,
             words: str | None = OVERRIDES_HELP) -> argparse.ArgumentParser:
    """A verb's parser: `-c` where the verb reads a config, `--overwrite` where it writes an output folder,
    and `words` (the help of its positional arguments; None: it takes none)."""
    parser = subparsers.add_parser(name, help=help, description=help, epilog=OUTPUT_RULE if writes else None)
    if reads_config:
        parser.add_argument("-c", "--config", help="YAML config file (defaults apply without it)")
    if words:
        parser.add_argument("args", nargs="*", help=words)
    if writes:
        parser.add_argument("--overwrite", action="store_true",
                            help="replace an existing output folder that domaintune did not write as this kind of "
                                 "output (never one that is, holds or lies inside an input)")
    return parser


def split_words(ns: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(overrides, targets): `key=value` words, and the rest (folders, 'base', 'export')."""
    words = getattr(ns, "args", [])
    return [w for w in words if "=" in w], [w for w in words if "=" not in w]


def overrides_only(ns: argparse.Namespace) -> list[str]:
    overrides, targets = split_words(ns)
    if targets:
        raise DomaintuneError(f"unexpected argument '{targets[0]}' (overrides are key=value)")
    return overrides


def targets_only(ns: argparse.Namespace, usage: str) -> list[str]:
    overrides, targets = split_words(ns)
    if overrides:
        raise DomaintuneError(f"{usage}: {overrides[0]}")
    return targets
