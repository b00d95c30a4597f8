"""Argument types shared by the subcommands: numbers are range-checked when parsed."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_in_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``[low, high]`` (no upper bound if None).

    A value outside the range is a usage error (exit 2, one line), raised while the
    arguments are parsed, before any work starts.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {bound}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def add_trust_pickle(parser: argparse.ArgumentParser) -> None:
    """Adds ``--trust-pickle``: allow model files whose loading needs a full unpickle."""
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load model files that contain pickled objects (this can run code stored in "
        "them: only for files you trust); refused by default",
    )
