"""What a user of `lafa <sub>` sees: the exit code, the one stderr line, stdout, and what is left on disk."""

from __future__ import annotations

import pytest

from lafa.cli import main


@pytest.fixture
def lafa(capsys):
    """`lafa ARGS` in this process -> (exit code, stdout, the stderr lines); a traceback fails the test."""

    def run(*args: str) -> tuple[int, str, list[str]]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err
        return code, out, [line for line in err.splitlines() if line.startswith("lafa ")]

    return run
