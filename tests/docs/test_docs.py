"""README.md and docs/ against the code: every `domaintune` command they show parses with the real CLI
parser, every config key they name (in an override, quoted or not, or in backticks) exists in the schema,
and every YAML block they show loads as a config."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from domaintune.cli.main import build_parser
from domaintune.core.config import load_config
from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import Config
from domaintune.core.sweep_config import schema_keys

ROOT = Path(__file__).resolve().parents[2]
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SECTIONS = ("data", "train", "evaluate", "model", "prompt", "sweep")
TOP_LEVEL = ("seed", "threads")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
YAML_FENCE = re.compile(r"^```ya?ml\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
# `data.format`, `train.lora.r=16`: a section, then dotted names; file names (`train.py`) are not keys.
DOTTED_KEY = re.compile(rf"^((?:{'|'.join(SECTIONS)})(?:\.[a-z_][a-z0-9_]*)+)(?:=|$)")
FILE_SUFFIXES = {"py", "json", "jsonl", "md", "yaml", "csv", "html", "sqlite", "txt", "gguf", "skops"}
# Where the word `domaintune` starts a command: at the start, after a path, `-m`, or VAR=value prefixes.
OPTIONAL = re.compile(r"(?<= )\[(-[^\]]*)\]")  # usage notation `[--out DIR]`: checked as if given
# Verbs whose words are all key=value overrides: any other word is refused when the verb runs.
OVERRIDES_ONLY = {"prepare", "train", "baseline", "demo", "config"}
# Commands a guide shows in order to show the error they get.
SHOWN_FAILING = {"config train.lora.rnak=16"}
COMMAND = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*(?:\S*/)?(?:.* -m )?domaintune (.*)$")


def _commands_in_fences(text: str) -> list[str]:
    commands = []
    for block in FENCE.findall(text):
        block = block.replace("\\\n", " ")  # a command continued over several lines is one command
        for line in block.splitlines():
            match = COMMAND.match(line.strip())
            if match:
                commands.append(match.group(1))
    return commands


def _commands_inline(text: str) -> list[str]:
    prose = FENCE.sub("", text)
    return [m.group(1) for code in INLINE.findall(prose) if (m := COMMAND.match(" ".join(code.split())))]


def _documented_commands() -> list[tuple[str, str]]:
    found = []
    for guide in GUIDES:
        text = guide.read_text(encoding="utf-8")
        for command in _commands_in_fences(text) + _commands_inline(text):
            if command.split(" ", 1)[0].endswith(":"):  # `domaintune train: error: ...` is output, not a command
                continue
            found.append((guide.relative_to(ROOT).as_posix(), command))
    return found


COMMANDS = _documented_commands()
KEYS = schema_keys(Config)
DEFAULTS = Config().model_dump()


def _is_key(key: str) -> bool:
    """A key of the schema, or a path inside a dict-valued one (`data.label_map`, `sweep.space`)."""
    if key in KEYS:
        return True
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in KEYS and not KEYS[prefix]:
            node = DEFAULTS
            for part in parts[:end]:
                node = node[part]
            return isinstance(node, dict)
    return False


def test_the_guides_show_commands():
    assert len(COMMANDS) >= 40, "the extraction itself works"
    assert {"README.md", "docs/troubleshooting.md", "docs/ko/quickstart.md"} <= {guide for guide, _ in COMMANDS}


@pytest.mark.parametrize(("guide", "command"), COMMANDS)
def test_documented_command_parses(guide, command, capsys):
    if command in SHOWN_FAILING:
        return
    try:
        words = shlex.split(OPTIONAL.sub(r"\1", command), comments=True)
    except ValueError as exc:
        pytest.fail(f"{guide}: `domaintune {command}` fails when pasted into a shell: {exc}")
    try:
        ns = build_parser().parse_args(words)
    except SystemExit:
        pytest.fail(f"{guide}: `domaintune {command}` does not parse: {capsys.readouterr().err.strip()}")
    words = getattr(ns, "args", [])
    overrides = [w for w in words if "=" in w]
    unknown = [w for w in overrides if not _is_key(w.split("=", 1)[0])]
    assert not unknown, f"{guide}: `domaintune {command}` overrides keys the schema lacks: {unknown}"
    if ns.verb in OVERRIDES_ONLY:
        stray = [w for w in words if "=" not in w]
        assert not stray, f"{guide}: `domaintune {command}`: the shell passes {stray} as arguments of their own"
    # The overrides apply on top of the command's own config file when it ships with the repository
    # (configs/...); a file the reader writes first (my.yaml) is checked against the defaults.
    shipped = ROOT / ns.config if getattr(ns, "config", None) and (ROOT / ns.config).is_file() else None
    try:
        load_config(shipped, overrides)
    except DomaintuneError as exc:
        pytest.fail(f"{guide}: `domaintune {command}`: {exc}")


def _named_keys() -> list[tuple[str, str]]:
    named = []
    for guide in GUIDES:
        for code in INLINE.findall(FENCE.sub("", guide.read_text(encoding="utf-8"))):
            for word in code.split():
                match = DOTTED_KEY.match(word.lstrip("'\""))  # `'data.label_map={...}'` as pasted into a shell
                if match and match.group(1).rsplit(".", 1)[-1] not in FILE_SUFFIXES:
                    named.append((guide.relative_to(ROOT).as_posix(), match.group(1)))
    return sorted(set(named))


def test_every_config_key_the_guides_name_exists():
    named = _named_keys()
    assert len(named) >= 50, "the extraction itself works"
    missing = [f"{guide}: {key}" for guide, key in named if not _is_key(key)]
    assert not missing, "keys the schema lacks:\n" + "\n".join(missing)


@pytest.mark.parametrize("key", [k for k in ("seed", "threads", *SECTIONS)])
def test_the_known_prefixes_are_the_schema_s(key):
    assert key in KEYS


CONFIG_BLOCKS = [(guide.relative_to(ROOT).as_posix(), block) for guide in GUIDES
                 for block in YAML_FENCE.findall(guide.read_text(encoding="utf-8"))]


def test_the_guides_show_config_blocks():
    assert {"docs/troubleshooting.md", "docs/ko/quickstart.md"} <= {guide for guide, _ in CONFIG_BLOCKS}


@pytest.mark.parametrize(("guide", "block"), CONFIG_BLOCKS)
def test_documented_config_block_loads(guide, block, tmp_path):
    """Every YAML block of the guides is (part of) a config: its keys and values pass the schema."""
    path = tmp_path / "guide.yaml"
    path.write_text(block, encoding="utf-8")
    try:
        load_config(path)
    except DomaintuneError as exc:
        pytest.fail(f"{guide}: its YAML block does not load as a config: {exc}")
