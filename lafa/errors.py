"""Errors in what the user gave lafa (a file, a checkpoint, a config) or in how a run went (it diverged).

They live below every other module so that models, stages, checkpoints and commands can raise them without
importing the CLI; `lafa.cli.main` prints their message as one line and exits with `USER_ERROR_EXIT`.
"""

USER_ERROR_EXIT = 2


class LafaUserError(ValueError):
    """An error whose message names the file and the fix: printed as one line, exit code 2, no traceback."""


class MissingFileError(LafaUserError, FileNotFoundError):
    """A file lafa was pointed to does not exist."""
