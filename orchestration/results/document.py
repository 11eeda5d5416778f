"""A report as a list of blocks, rendered once as Markdown and once as one self-contained HTML file.

The HTML embeds every figure as a data URI, so the single file can be mailed
or attached to a paper review without its figures folder.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestration.results.show import format_cell, to_markdown


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str   # one paragraph; `code` spans and _emphasis_ are the only markup


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame


@dataclass(frozen=True)
class Figure:
    alt: str
    file: str   # relative to the report's folder, e.g. figures/fold_bars.png


def markdown(blocks: list) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Table):
            parts.append(to_markdown(block.frame))
        else:
            parts.append(f"![{block.alt}]({block.file})")
    return "\n\n".join(parts) + "\n"


STYLE = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.85rem}th,td{border:1px solid #ccc;padding:.2rem .4rem}
th{background:#f3f3f3}th,td{white-space:nowrap}td{text-align:right}td:first-child,td:nth-child(2){text-align:left}
img{max-width:100%}figure svg{width:100%;max-width:56rem;height:auto}figure{margin:1rem 0}
code{background:#f3f3f3;padding:0 .2rem}"""


def inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"(?<!\w)_([^_]+)_(?!\w)", r"<em>\1</em>", text)


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = ["<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row) + "</tr>"
            for row in frame.itertuples(index=False)]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure_html(block: Figure, root: Path) -> str:
    """The SVG inline where there is one (vector, its text selectable and searchable), else the PNG embedded."""
    svg = (root / block.file).with_suffix(".svg")
    if not svg.exists():
        return f'<img alt="{html.escape(block.alt)}" src="{data_uri(root / block.file)}">'
    content = svg.read_text(encoding="utf-8")
    content = content[content.index("<svg"):]     # no XML prolog or doctype inside HTML
    return f'<figure role="img" aria-label="{html.escape(block.alt)}">{content}</figure>'


def self_contained_html(blocks: list, root: Path) -> str:
    """The report as one HTML file; figures are read from `root` and embedded."""
    title = next((b.text for b in blocks if isinstance(b, Heading)), "report")
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{inline(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            body.append(f"<p>{inline(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(html_table(block.frame))
        else:
            body.append(figure_html(block, root))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")
