"""`--help` of evaluate, generate and export reads as text (issue 25): named types, no `%%`, every option described
with its default, examples on their own lines."""

from __future__ import annotations

import re

import pytest

from lafa.cli import main

COMMANDS = ("evaluate", "generate", "export", "encode", "analyze")


def help_text(command: str, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def options(text: str) -> dict[str, str]:
    """--option -> its help text (the lines after it up to the next option)."""
    found, current = {}, None
    for line in text.split("\n\n", 1)[1].splitlines():
        match = re.match(r"^  (?:-\w [A-Z_]+, )?(--[\w.]+)", line)  # `-c CONFIG, --config CONFIG`, `--mel.n_fft` too
        if match:
            current = match.group(1)
            found[current] = re.sub(r"^  (?:-\w [A-Z_]+, )?--\S+( [A-Z_]+| \{[^}]*\}| \[=flags\])?(, --no_\w+)?", "", line).strip()
        elif current and line.startswith("      "):
            found[current] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            current = None
    return {k: v.strip() for k, v in found.items()}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_well(command, capsys):
    text = help_text(command, capsys)
    assert "<function" not in text and "<lambda>" not in text and " at 0x" not in text
    assert "%%" not in text
    described = options(text)
    assert "--config" in described and "--out" in described
    for option, help_ in described.items():
        assert help_ and not help_.startswith("("), f"{command} {option} has no description: {help_!r}"
        if option not in ("--help", "--config", "--print_config") and not option.endswith(("--analysis", "--mel")):
            assert "default:" in help_ or "required" in help_, f"{command} {option} shows no default: {help_!r}"
    # the examples stay on their own lines
    examples = [line for line in text.splitlines() if line.startswith(f"  lafa {command} ")]
    assert len(examples) >= 2, text


def test_evaluate_options_come_from_evaluate_folders(capsys):
    """The options are evaluate_folders' arguments: a new argument appears with its docstring's help."""
    import inspect

    from lafa.commands.evaluate import NOT_OPTIONS
    from lafa.metrics.generation import evaluate_folders

    described = options(help_text("evaluate", capsys))
    for name in inspect.signature(evaluate_folders).parameters:
        if name not in NOT_OPTIONS:
            assert f"--{name}" in described, name
    assert described["--openl3_fft"].startswith("OpenL3 STFT: reference = TensorFlow 2.13's")
    assert "Literal['reference', 'exact'], default: reference" in described["--openl3_fft"]
