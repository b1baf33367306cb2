"""The report as Markdown, its figures written as PNG files beside it (``<stem>-<figure>.png``).

Table cells are escaped for Markdown (``|``, backslash, newlines, and ``<``/``>``/``&`` as HTML entities) so a
string from a results file cannot break the table or inject markup.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpuprobe.report import plots
from gpuprobe.report.content import Document, Figure, Table

_MARK = {"pass": "✓ ", "warn": "! ", "fail": "✗ ", "skip": "", "muted": ""}


def md_escape(text: object) -> str:
    s = str(text).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|").replace("\r", "").replace("\n", " ").replace("`", "\\`").replace("*", "\\*") \
        .replace("_", "\\_")


def _table(t: Table) -> list[str]:
    align = t.align or ["l"] + ["r"] * (len(t.columns) - 1)
    out = [f"*{md_escape(t.caption)}*", ""] if t.caption else []
    out.append("| " + " | ".join(md_escape(c) or " " for c in t.columns) + " |")
    out.append("|" + "|".join("---:" if (align[i] if i < len(align) else "l") == "r" else "---"
                              for i in range(len(t.columns))) + "|")
    for r, row in enumerate(t.rows):
        cells = [_MARK.get(t.cell_class.get((r, c), ""), "") + md_escape(v) for c, v in enumerate(row)]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def render_markdown(doc: Document, out_path: str | os.PathLike[str], footer: str = "") -> list[Path]:
    """Write ``out_path`` and its PNG figures; returns every file written (the .md first)."""
    from gpuprobe.results.io import output_target, write_atomic

    shown = Path(out_path)
    out_path = output_target(shown, "the Markdown report")  # refused before any figure is drawn; PNGs beside it
    written: list[Path] = [shown]
    lines = [f"# {md_escape(doc.title)}", "", f"_{md_escape(doc.subtitle)}_", "", "## Summary", ""]
    icon = {"pass": "✅", "warn": "⚠️", "fail": "❌", "info": "ℹ️"}
    lines += [f"- {icon.get(level, '-')} {md_escape(text)}" for level, text in doc.summary] + [""]
    for s in doc.sections:
        lines += [f"## {md_escape(s.title)}", ""]
        for b in s.blocks:
            if isinstance(b, str):
                lines += [md_escape(b), ""]
            elif isinstance(b, list):
                lines += [f"- {md_escape(x)}" for x in b] + [""]
            elif isinstance(b, Table):
                lines += _table(b)
            elif isinstance(b, Figure):
                fig = b.draw()
                if fig is None:
                    continue
                png = out_path.with_name(f"{out_path.stem}-{b.name}.png")
                write_atomic(png, plots.png_bytes(fig), "a figure of the Markdown report")
                written.append(png)
                lines += [f"![{md_escape(b.title)}]({png.name})", ""]
                if b.caption:
                    lines += [f"_{md_escape(b.caption)}_", ""]
    if footer:
        lines += ["---", "", md_escape(footer), ""]
    write_atomic(out_path, "\n".join(lines), "the Markdown report")
    return written
