"""Self-contained HTML and markdown writing for reports: a page of escaped text, tables and
plotly figures (plotly.js inlined once, so the file opens offline).

Every string that comes from data goes through `html.escape` (tables via pandas' escaping,
figures via `cdviz.report.figures.label`); only the page's own markup is emitted raw.
"""

from __future__ import annotations

import html
import math
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.note { color: #666; font-size: 0.9em; } code, pre { background: #f6f6f6; padding: 1px 4px; }
pre { padding: 0.6em; overflow-x: auto; }
.findings { border: 2px solid #4C72B0; border-radius: 6px; padding: 0.4em 1.2em; background: #f5f8fc; }
.findings h2 { margin-top: 0.3em; border: none; } .findings li { margin: 0.35em 0; }
.findings li.warning { color: #8a4b00; } .findings li.warning::marker { content: "⚠ "; }
details.section > summary { cursor: pointer; } details.section > summary h2 { display: inline; }
th a { color: inherit; text-decoration: underline dotted; }
dl.glossary dt { font-weight: bold; margin-top: 0.6em; } dl.glossary dd { margin-left: 1.5em; }
nav.links { font-size: 0.9em; }
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x) -> str:
    if isinstance(x, float):
        return "" if math.isnan(x) else f"{x:.4g}"
    return str(x)


class Page:
    """An HTML document built section by section.

    With ``collapsible``, each level-2 heading opens a section that can be folded (open by
    default), so the findings at the top are followed by the detail.
    """

    def __init__(self, title: str, collapsible: bool = False, glossary: Sequence[str] = ()):
        self.title = title
        self.parts: list[str] = []
        self._plotly_inlined = False
        self.collapsible = collapsible
        self._open = False
        self.glossary_names = set(glossary)  # column names whose table headers link to the glossary

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        ident = f' id="{esc(anchor)}"' if anchor else ""
        if self.collapsible and level == 2:
            self._close()
            self.parts.append(f'<details class="section" open{ident}><summary><h2>{esc(text)}</h2></summary>')
            self._open = True
            return
        self.parts.append(f"<h{level}{ident}>{esc(text)}</h{level}>")

    def _close(self) -> None:
        if self._open:
            self.parts.append("</details>")
            self._open = False

    def findings(self, findings, title: str = "What was found") -> None:
        """The findings box (`cdviz.report.findings.Finding` list): escaped sentences, warnings marked."""
        items = "".join(f'<li class="{"warning" if f.warning else esc(f.topic.replace(" ", "-"))}">{esc(f.text)}</li>'
                        for f in findings)
        self.parts.append(f'<section class="findings" id="findings"><h2>{esc(title)}</h2><ul>{items}</ul></section>')

    def links(self, links: Sequence[tuple[str, str]]) -> None:
        """A line of links (text, href); both escaped."""
        self.parts.append('<nav class="links">' + " | ".join(f'<a href="{esc(h)}">{esc(t)}</a>' for t, h in links)
                          + "</nav>")

    def glossary(self, terms) -> None:
        """The glossary (`cdviz.report.glossary.Term` list) as a definition list with anchors."""
        from cdviz.report.glossary import term_anchor

        rows = []
        for t in terms:
            extra = "".join(f" <em>{esc(k)}:</em> {esc(v)}." for k, v in (("range", t.range),
                                                                          ("direction", t.direction)) if v)
            rows.append(f'<dt id="{term_anchor(t.name)}">{esc(t.name)}</dt><dd>{esc(t.meaning)}{extra}</dd>')
        self.parts.append('<dl class="glossary">' + "".join(rows) + "</dl>")

    def paragraph(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{esc(text)}</p>")

    def code(self, text: str) -> None:
        self.parts.append(f"<pre>{esc(text)}</pre>")

    def figure(self, fig: go.Figure) -> None:
        """Embed a figure; the first one carries plotly.js inline, later ones reuse it."""
        self.parts.append(pio.to_html(fig, include_plotlyjs="inline" if not self._plotly_inlined else False,
                                      full_html=False, default_height="460px", config={"displaylogo": False}))
        self._plotly_inlined = True

    def table(self, frame: pd.DataFrame, max_rows: int = 60, file: str | None = None) -> None:
        """An escaped table of at most ``max_rows`` rows; says where the full table is."""
        shown = frame.head(max_rows)
        table = shown.to_html(index=False, escape=True, na_rep="", float_format=_fmt, border=0)
        self.parts.append(self._link_headers(table, [str(c) for c in shown.columns]))
        if len(frame) > max_rows or file:
            more = f"showing {len(shown)} of {len(frame)} rows" if len(frame) > max_rows else f"{len(frame)} rows"
            self.paragraph(f"{more}; full table: {file}" if file else more, note=True)

    def _link_headers(self, table: str, columns: list[str]) -> str:
        """Column headers that are glossary terms link to their definition."""
        from cdviz.report.glossary import term_anchor

        for c in columns:
            if c in self.glossary_names:
                table = table.replace(f"<th>{esc(c)}</th>", f'<th><a href="#{term_anchor(c)}">{esc(c)}</a></th>', 1)
        return table

    def render(self) -> str:
        self._close()
        body = "\n".join(self.parts)
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{esc(self.title)}</title><style>{CSS}</style></head>\n<body>\n<h1>{esc(self.title)}</h1>\n"
                f"{body}\n</body></html>\n")


def md_escape(x) -> str:
    """A value as markdown table text: HTML-escaped (markdown renders raw HTML), pipes and
    newlines neutralised."""
    return esc(_fmt(x)).replace("|", "\\|").replace("\n", " ")


def md_table(frame: pd.DataFrame, max_rows: int = 40) -> str:
    """A GitHub-flavoured markdown table of the first ``max_rows`` rows."""
    if frame.empty:
        return "_(empty)_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(md_escape(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.head(max_rows).itertuples(index=False):
        lines.append("| " + " | ".join(md_escape(v) for v in row) + " |")
    if len(frame) > max_rows:
        lines.append(f"\n_showing {max_rows} of {len(frame)} rows_")
    return "\n".join(lines) + "\n"
