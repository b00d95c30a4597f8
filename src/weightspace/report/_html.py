"""A self-contained HTML page from the report's markdown, figures inlined as base64 PNG.

The markdown is rendered by the ``markdown`` package (tables, attribute lists and heading
ids); a tree processor replaces every image's path with a data URI, so the page needs no
other file.
"""

from __future__ import annotations

import base64
import html
import xml.etree.ElementTree as ET
from pathlib import Path

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

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
img { max-width: 100%; }
"""


class _InlineImages(Treeprocessor):
    """Replaces each ``<img src=path>`` (relative to ``base_dir``) with a PNG data URI."""

    def __init__(self, md: markdown.Markdown, base_dir: Path) -> None:
        super().__init__(md)
        self.base_dir = base_dir

    def run(self, root: ET.Element) -> None:
        for image in root.iter("img"):
            data = (self.base_dir / image.get("src", "")).read_bytes()
            image.set("src", "data:image/png;base64," + base64.b64encode(data).decode("ascii"))


class _InlineImagesExtension(Extension):
    def __init__(self, base_dir: Path) -> None:
        super().__init__()
        self.base_dir = base_dir

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 - markdown's API
        md.treeprocessors.register(_InlineImages(md, self.base_dir), "inline_images", 0)


def markdown_to_html(text: str, base_dir: Path, title: str) -> str:
    """Convert the report's markdown into one HTML page.

    Args:
        text: the report's markdown.
        base_dir: folder that image paths are relative to.
        title: the page title.

    Returns:
        The HTML document, with inline CSS and every image embedded as a data URI.
    """
    body = markdown.markdown(
        text, extensions=["tables", "toc", "sane_lists", _InlineImagesExtension(base_dir)]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + body
        + "\n</body>\n</html>\n"
    )
