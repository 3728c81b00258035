"""The CLI's promise for user errors: exactly one line on stderr."""


def one_error_line(capsys) -> str:
    """What the command wrote to stderr, checked to be exactly one line; returns that line."""
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, f"expected exactly one line on stderr, got {err!r}"
    return err.rstrip("\n")
