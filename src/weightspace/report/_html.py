"""A self-contained HTML page from the report's markdown, figures inlined as base64 PNG.

Converts only the constructs the report emits: ATX headings, paragraphs, pipe tables,
``- `` lists, image lines, and inline ``**bold**`` and ```code```.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 64rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.5; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
th { background: #f4f4f4; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f2f2f2; padding: 0 .2rem; border-radius: 3px; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; }
figcaption { font-size: .85rem; color: #555; }
"""
_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")
_HEADING = re.compile(r"^(?P<level>#{1,6}) (?P<text>.+)$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def markdown_to_html(markdown: str, base_dir: Path, title: str) -> str:
    """Convert the report's markdown into one HTML page.

    Args:
        markdown: the report text.
        base_dir: folder that image paths are relative to.
        title: the page title.

    Returns:
        The HTML document, with inline CSS and every image embedded as a data URI.
    """
    body: list[str] = []
    paragraph: list[str] = []
    table: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if paragraph:
            body.append(f"<p>{_inline(' '.join(paragraph))}</p>")
        if table:
            body.append(_table(table))
        if items:
            body.append("<ul>\n" + "\n".join(f"<li>{_inline(i)}</li>" for i in items) + "\n</ul>")
        paragraph.clear()
        table.clear()
        items.clear()

    for line in markdown.splitlines():
        heading, image = _HEADING.match(line), _IMAGE.match(line)
        if heading:
            flush()
            level, text = len(heading["level"]), heading["text"]
            body.append(f'<h{level} id="{_anchor(text)}">{_inline(text)}</h{level}>')
        elif image:
            flush()
            body.append(_figure(image["alt"], base_dir / image["src"]))
        elif line.startswith("|"):
            table.append(line)
        elif line.startswith("- "):
            items.append(line[2:])
        elif line.strip():
            paragraph.append(line.strip())
        else:
            flush()
    flush()
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _inline(text: str) -> str:
    """Escape HTML and convert inline code spans and bold."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _anchor(text: str) -> str:
    """An id for a heading."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cells(line: str) -> list[str]:
    """The cells of one pipe-table row, with ``\\|`` unescaped."""
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(line.strip())[1:-1]]


def _table(lines: list[str]) -> str:
    """A pipe table (header row, separator row, body rows) as an HTML table."""
    header, rows = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    head = "".join(f"<th>{_inline(cell)}</th>" for cell in header)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _figure(alt: str, path: Path) -> str:
    """An image embedded as a base64 data URI, with its caption."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(alt)}</figcaption></figure>"
    )
