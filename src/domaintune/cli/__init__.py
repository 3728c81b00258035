"""The command line: parses arguments and calls the Python API. May import everything."""

from domaintune.cli.main import main

__all__ = ["main"]
