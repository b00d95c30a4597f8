"""The report of ``weightspace experiment``: markdown, HTML and PNG figures from results."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._figures import write_figures
from ._html import markdown_to_html
from ._markdown import render_markdown
from ._stats import OUR_ENCODERS, format_stat

__all__ = ["OUR_ENCODERS", "format_stat", "write_report"]


def write_report(results: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write the experiment report: ``report.md``, ``report.html`` and ``figures/*.png``.

    The HTML page has the same content as the markdown, with the figures inlined as base64
    PNG. ``results.json`` itself is not written here.

    Args:
        results: the experiment results, following the results.json schema.
        out_dir: the folder to write into, created if missing.

    Returns:
        ``{"markdown": path, "html": path, "figures": {name: path}}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(results, out_dir / "figures")
    markdown = render_markdown(results, figures)
    md_path = out_dir / "report.md"
    md_path.write_text(markdown, encoding="utf-8")
    title = f"weightspace experiment report: {results['experiment'].get('name', 'experiment')}"
    html_path = out_dir / "report.html"
    html_path.write_text(markdown_to_html(markdown, out_dir, title), encoding="utf-8")
    return {"markdown": md_path, "html": html_path, "figures": figures}
