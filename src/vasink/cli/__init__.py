"""The ``vasink`` command line.

Each command group lives in its own module with ``add_commands(subparsers)``, which adds its parsers and
sets ``func(args) -> int`` on each; this file only collects them (``COMMAND_MODULES``) and turns a user's
mistake into one line on stderr (:mod:`vasink.cli.errors`). Nothing heavy (torch, transformers,
matplotlib) is imported before a command runs, so ``vasink --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from . import errors

COMMAND_MODULES = ("vasink.cli.core", "vasink.cli.eval", "vasink.cli.analysis")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake said in one line (the flag and the fix) instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


ALL = "*"


def build_parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The parser; ``command``: the one command to build in full (the others get only their name and help,
    which is all ``vasink --help`` shows and keeps it from importing the benchmark registry); ``ALL``: every
    command in full, None: none."""
    parser = Parser(prog="vasink", description="Visual attention sinks and VAR for multimodal LLMs")
    parser.add_argument("--version", action="version", version=f"vasink {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        if command == ALL or command in module.COMMANDS:
            module.add_commands(commands)
        else:
            for stub, text in module.COMMANDS.items():
                commands.add_parser(stub, help=text)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The command a command line names (the first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # without building every command's parser
        print(f"vasink {__version__}")
        return 0
    try:
        args = build_parser(_command_of(argv)).parse_args(argv)
    except SystemExit as exit_:  # --help, --version, a usage mistake: argparse has printed what it had to say
        return exit_.code if isinstance(exit_.code, int) else 2
    with errors.one_line_warnings():
        return errors.run(args)
