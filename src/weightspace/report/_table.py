"""The one markdown table writer of the report and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pipe_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub pipe table; ``|`` inside cells is escaped."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers))] + [line(r) for r in rows])
