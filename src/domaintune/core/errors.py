"""The one exception type a user should ever see from domaintune, and the one way it warns.

Anything raised as `DomaintuneError` is printed by the CLI as a single line and exits with status 2;
anything else is a bug and keeps its traceback. Warnings (`warn`) go to stderr as one line each and
the run goes on. A message whose cause the troubleshooting guide explains ends with
`see docs/troubleshooting.md#<section>` (tests/test_troubleshooting.py checks every such section exists).
"""

from __future__ import annotations

import sys

_said: set[str] = set()


class DomaintuneError(Exception):
    """A problem with the user's input (config, data, model path) that they can fix."""


def warn(message: str, once: bool = False) -> None:
    """Print `domaintune: warning: MESSAGE` to stderr; with `once`, at most once per process."""
    if once and message in _said:
        return
    _said.add(message)
    print(f"domaintune: warning: {message}", file=sys.stderr, flush=True)
