"""What lafa's own subcommands share on their command line: the parser (examples kept on their own lines,
defaults shown), argument errors as one line (`BadInput`, exit code 2 through `lafa.cli`), yes/no flags taken
from a function's signature and docstring, and the printed device."""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable

import torch
from jsonargparse import ActionYesNo, ArgumentParser, DefaultHelpFormatter

from lafa.errors import BadInput

TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help (types and defaults of every option) with the description printed as written, so the
    examples of a command's docstring stay on their own lines."""


def command_parser(prog: str, description: str | None) -> ArgumentParser:
    """A subcommand's parser: `--config FILE` (YAML of any of its options), errors raised, not printed."""
    parser = ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter, exit_on_error=False)
    parser.add_argument("-c", "--config", action="config", help="a YAML file of any of the options below")
    return parser


def _option_of(message: str, parser: ArgumentParser) -> str:
    """The option an argparse/jsonargparse message is about: `--name` (or the command when none is named)."""
    for pattern in (r"arguments are required: ([\w.]+)", r'[Kk]ey "([\w.]+)"', r"argument --([\w.]+)",
                    r"unrecognized arguments: (\S+)"):
        match = re.search(pattern, message)
        if match:
            name = match.group(1)
            return name if name.startswith("-") else f"--{name}"
    return parser.prog


def parse(parser: ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parser.parse_args(argv); a wrong or missing option is one line (`BadInput`): the option, what is wrong,
    and where the options are listed."""
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as e:
        message = " ".join(str(e).split())
        message = re.sub(r"^Parser key \"[\w.]+\": ", "", message)
        message = re.sub(r"^the following arguments are required: .*", "is required", message)
        message = re.sub(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)",
                         lambda m: f"{m.group(2)} is not one of {m.group(1)}", message)
        message = re.sub(r"Expected a <class '(\w+)'>\. Got value: (.*)",
                         lambda m: f"{m.group(2)} is not {TYPE_NAMES.get(m.group(1), 'a ' + m.group(1))}", message)
        raise BadInput(_option_of(str(e), parser), message, f"see `{parser.prog} --help`") from e


def add_yes_no_flags(parser: ArgumentParser, fn: Callable, names: list[str]) -> None:
    """`--name` / `--no_name` flags (no value needed) for boolean parameters of `fn`, with the default of its
    signature and the help of its docstring: jsonargparse's own bool options want a value (`--name true`)."""
    from docstring_parser import parse as parse_docstring

    signature = inspect.signature(fn)
    docs = {p.arg_name: " ".join((p.description or "").split()) for p in parse_docstring(fn.__doc__ or "").params}
    for name in names:
        default = signature.parameters[name].default
        parser.add_argument(f"--{name}", action=ActionYesNo, default=bool(default), help=docs[name])


def print_device(device: torch.device) -> None:
    """The device a command runs on, printed once (`device: cpu`)."""
    print(f"device: {device}")
