"""The one exception type a user should ever see from domaintune.

Anything raised as `DomaintuneError` is printed by the CLI as a single line and exits with status 2;
anything else is a bug and keeps its traceback.
"""


class DomaintuneError(Exception):
    """A problem with the user's input (config, data, model path) that they can fix."""
