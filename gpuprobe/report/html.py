"""One self-contained HTML file: inline CSS, figures embedded as base64 PNG, no external assets or scripts.

Every string that comes from a results or validation file is passed through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from gpuprobe.report import plots
from gpuprobe.report.content import Document, Figure, Section, Table

CSS = """
:root { --fg:#1f2328; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --soft:#f6f8fa;
        --pass:#1a7f37; --warn:#9a6700; --fail:#cf222e; --info:#0969da; }
* { box-sizing: border-box; }
body { font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
.subtitle { color: var(--muted); margin: 0 0 20px; }
h2 { font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 6px; margin: 36px 0 14px; }
nav { font-size: 13px; margin: 0 0 18px; color: var(--muted); }
nav a { color: var(--info); text-decoration: none; margin-right: 14px; }
.summary { border: 1px solid var(--line); border-radius: 8px; background: var(--soft); padding: 12px 16px; }
.summary div { padding: 3px 0 3px 26px; position: relative; }
.summary div::before { position: absolute; left: 0; font-weight: 700; }
.summary .pass::before { content: "✓"; color: var(--pass); }
.summary .warn::before { content: "!"; color: var(--warn); }
.summary .fail::before { content: "✗"; color: var(--fail); }
.summary .info::before { content: "•"; color: var(--info); }
table { border-collapse: collapse; margin: 8px 0 18px; font-size: 13px; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--muted); font-size: 12.5px; padding-bottom: 4px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; vertical-align: top; }
th { background: var(--soft); text-align: left; font-weight: 600; }
td.r, th.r { text-align: right; }
td.pass { color: var(--pass); font-weight: 600; } td.warn { color: var(--warn); font-weight: 600; }
td.fail { color: var(--fail); font-weight: 600; } td.skip, td.muted { color: var(--muted); }
figure { margin: 10px 0 22px; } figure img { max-width: 100%; height: auto; border: 1px solid var(--soft); }
figcaption { color: var(--muted); font-size: 12.5px; }
ul { margin: 4px 0 14px; } p { margin: 6px 0 10px; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; border-top: 1px solid var(--line); padding-top: 8px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _table(t: Table) -> str:
    align = t.align or ["l"] + ["r"] * (len(t.columns) - 1)
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{_e(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f'<th class="{align[i] if i < len(align) else "l"}">{_e(c)}</th>'
                                       for i, c in enumerate(t.columns)) + "</tr></thead><tbody>")
    for r, row in enumerate(t.rows):
        cells = []
        for c, v in enumerate(row):
            cls = " ".join(x for x in (align[c] if c < len(align) else "l", t.cell_class.get((r, c), "")) if x)
            cells.append(f'<td class="{cls}">{_e(v)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _figure(f: Figure) -> str:
    fig = f.draw()
    if fig is None:
        return ""
    data = base64.b64encode(plots.png_bytes(fig)).decode("ascii")
    cap = _e(f.title) + (f" — {_e(f.caption)}" if f.caption else "")
    img = f'<img alt="{_e(f.title)}" src="data:image/png;base64,{data}">'
    return f"<figure>{img}<figcaption>{cap}</figcaption></figure>"


def _section(s: Section) -> str:
    out = [f'<section id="{_anchor(s.title)}"><h2>{_e(s.title)}</h2>']
    for b in s.blocks:
        if isinstance(b, str):
            out.append(f"<p>{_e(b)}</p>")
        elif isinstance(b, list):
            out.append("<ul>" + "".join(f"<li>{_e(x)}</li>" for x in b) + "</ul>")
        elif isinstance(b, Table):
            out.append(_table(b))
        elif isinstance(b, Figure):
            out.append(_figure(b))
    out.append("</section>")
    return "\n".join(out)


def render_html(doc: Document, footer: str = "") -> str:
    nav = "".join(f'<a href="#{_anchor(s.title)}">{_e(s.title)}</a>' for s in doc.sections)
    summary = "".join(f'<div class="{_e(level)}">{_e(text)}</div>' for level, text in doc.summary)
    body = "\n".join(_section(s) for s in doc.sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(doc.title)}</title><style>{CSS}</style></head>
<body><main>
<h1>{_e(doc.title)}</h1><p class="subtitle">{_e(doc.subtitle)}</p>
<nav>{nav}</nav>
<section id="summary"><h2>Summary</h2><div class="summary">{summary}</div></section>
{body}
<footer>{_e(footer)}</footer>
</main></body></html>
"""


def write_html(doc: Document, path: str | os.PathLike[str], footer: str = "") -> Path:
    from gpuprobe.results.io import write_atomic

    write_atomic(path, render_html(doc, footer), "the HTML report")
    return Path(path)
