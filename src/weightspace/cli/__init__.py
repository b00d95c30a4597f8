"""The ``weightspace`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..exceptions import WeightspaceError
from . import _demo, _experiment, _index, _inspect, _merge, _train, _transfer, _zoo

_COMMANDS = (_zoo, _train, _index, _transfer, _merge, _experiment, _inspect, _demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="weightspace",
        description="Learn from the trained weights of neural networks.",
        epilog="Run 'weightspace COMMAND --help' for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on a user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (WeightspaceError, FileNotFoundError) as err:
        message = " ".join(str(err).split())
        print(f"weightspace: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `weightspace demo | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("weightspace: interrupted", file=sys.stderr)
        return 130
