"""Errors in what the user gave lafa (a file, a checkpoint, a config) or in how a run went (it diverged).

They live below every other module so that models, stages, checkpoints and commands can raise them without
importing the CLI; `lafa.cli.main` prints their message as one line and exits with `USER_ERROR_EXIT`.

The contract of every entry point: a user mistake ends with one line
`lafa <sub>: error: <file or option>: <what is wrong>; <how to fix>` and exit code 2, no traceback, nothing
half-written. `BadInput(where, what, fix)` builds exactly that message.
"""

USER_ERROR_EXIT = 2


def listing(items, shown: int = 8) -> str:
    """The first `shown` of `items` for a one-line message: "a, b, c, ... (12 more)" ("none" when empty)."""
    items = [str(i) for i in items]
    if not items:
        return "none"
    return ", ".join(items[:shown]) + (f", ... ({len(items) - shown} more)" if len(items) > shown else "")


class LafaUserError(ValueError):
    """An error whose message names the file and the fix: printed as one line, exit code 2, no traceback."""


class MissingFileError(LafaUserError, FileNotFoundError):
    """A file lafa was pointed to does not exist."""


class BadInput(LafaUserError):
    """`<where>: <what is wrong>; <how to fix>`: where is the file or the option (`--seconds 0`, a path)."""

    def __init__(self, where: object, what: str, fix: str) -> None:
        self.where, self.what, self.fix = str(where), what, fix
        super().__init__(f"{self.where}: {what}; {fix}")
