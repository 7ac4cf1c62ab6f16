"""Markdown and HTML writing: pipe tables, values with intervals, relative links and inlined
images, and the self-contained report.html.

Tables are written by :func:`markdown_table` rather than ``DataFrame.to_markdown``, which needs the
optional ``tabulate`` package (not a project dependency); a pipe table needs no more than this.
"""
from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markdown_it import MarkdownIt

from ioi_anti.models.spec import weights_word
from ioi_anti.report.registry import SavedFigure


def _cell(value: Any, float_format: str) -> str:
    """A table cell: floats formatted, NaN as an en dash, pipes escaped."""
    if isinstance(value, float | np.floating):
        return "–" if np.isnan(value) else float_format.format(value)
    return str(value).replace("|", r"\|")


def markdown_table(frame: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """A GitHub-flavoured Markdown pipe table of ``frame`` (index dropped)."""
    header = "| " + " | ".join(_cell(c, float_format) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v, float_format) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def label_models(markdown: str, quantisation: Mapping[str, str]) -> str:
    """Every table cell of ``markdown`` that names a model with quantised weights followed by their type
    ("smollm2-135m (Q4_1)"), so that no table of the report shows a quantised model as if it were the original
    (a model in its original float weights keeps its plain name; the report's model section says so)."""
    quantisation = {model: q for model, q in quantisation.items() if q != "none"}
    if not quantisation:
        return markdown
    names = "|".join(re.escape(model) for model in sorted(quantisation, key=len, reverse=True))
    cell = re.compile(rf"(?<=\| )({names})(?= \|)")
    label = {model: f"{model} ({weights_word(q)})" for model, q in quantisation.items()}
    return "\n".join(cell.sub(lambda m: label[m.group(1)], line) if line.startswith("|") else line
                     for line in markdown.split("\n"))


def with_interval(value: float, low: float, high: float, float_format: str = "{:.3f}") -> str:
    """``value [low, high]`` as text."""
    return f"{_cell(value, float_format)} [{_cell(low, float_format)}, {_cell(high, float_format)}]"


INTERACTIVE_MARK = "<!-- interactive phase space -->"


def percent_text(value: float) -> str:
    """A share as a whole percentage with a space (``n/a`` where it is not finite)."""
    return f"{100 * value:.0f} %" if np.isfinite(value) else "n/a"


HTML_STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
blockquote { border-left: 4px solid #b00000; margin: 1em 0; padding: 0.2em 1em; background: #fff4f4; }
"""


def html_report(markdown: str, interactive_html: str, title: str = "ioi-anti report") -> str:
    """One self-contained HTML page from the report's Markdown (images as data URIs) with the
    interactive figure's HTML (plotly.js inlined) in place of :data:`INTERACTIVE_MARK`."""
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    if INTERACTIVE_MARK not in body:
        raise ValueError("The report has no place for the interactive phase space.")
    body = body.replace(INTERACTIVE_MARK, f'<div class="interactive">{interactive_html}</div>', 1)
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{HTML_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def relative_link(path: str, output_dir: str) -> str:
    """Link to a saved figure from the report's own folder, ``<output_dir>/report.md/<version>/``."""
    relative = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(output_dir)))
    return "../../" + relative.as_posix()


def data_uri(figure: SavedFigure) -> str:
    """The PNG of a saved figure inlined as a data URI (report.html is one self-contained page)."""
    return "data:image/png;base64," + base64.b64encode(figure.png).decode("ascii")
