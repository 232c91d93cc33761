"""The ``vasink`` command line.

Each command group lives in its own module with ``add_commands(subparsers)``, which adds its parsers and
sets ``func(args) -> int`` on each; this file only collects them (``COMMAND_MODULES``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("vasink.cli.core", "vasink.cli.eval", "vasink.cli.analysis")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vasink", description="Visual attention sinks and VAR for multimodal LLMs")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"vasink: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
