"""The report as GitHub-flavoured markdown and as one self-contained HTML file, from the same document.

Everything that comes from incident data or from the agent (titles, notes, merchant names, model output)
is untrusted: the HTML escapes it and forbids every fetch with a Content-Security-Policy, the markdown
escapes it or quotes it as code, so it reads as data and never as markup, links or instructions.
"""

from __future__ import annotations

import html
import re

from agent.report.data import ReportData
from agent.report.document import Cell, Code, Figure, Para, _when, sections

__all__ = ["md_text", "render_html", "render_markdown"]


# Markdown: escape what CommonMark/GFM would read as markup; code goes in spans or fences long enough.
# An underscore between two letters or digits can neither open nor close emphasis, so names like
# terminal_risk_7d stay readable; brackets are escaped, so parentheses can never become a link.
_MD_SPECIAL = re.compile(r"[\\`*<>\[\]|~&]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# A line start that would begin a list, heading or thematic break ("- x", "1. x", "# x", "---").
_MD_LINE_START = re.compile(r"^(?:([-+=#])(?=[\s\-=#]|$)|(\d{1,9})([.)])(?=\s|$))")


def md_text(text: str) -> str:
    """Untrusted text as inert markdown on one line: no emphasis, links, HTML, headings or lists."""
    escaped = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), " ".join(str(text).split()))
    return _MD_LINE_START.sub(lambda m: f"\\{m.group(1)}" if m.group(1) else f"{m.group(2)}\\{m.group(3)}", escaped)


def _md_code(text: str, *, block: bool = False) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    if block:
        fence = "`" * max(3, longest + 1)
        return f"{fence}text\n{text}\n{fence}"
    flat = " ".join(text.split()).replace("|", "\\|")  # a bar would end the table cell, even inside code
    ticks = "`" * (longest + 1)
    return f"{ticks} {flat} {ticks}" if flat else "–"


def _md_cell(cell: Cell) -> str:
    return _md_code(cell.text) if isinstance(cell, Code) else md_text(cell) or "–"


def render_markdown(data: ReportData) -> str:
    """The report as GitHub-flavoured markdown (charts are in the HTML file; the numbers are here too)."""
    inc = data.incident
    out = [f"# {inc.incident_id}: {md_text(inc.kind)} on {md_text(inc.subject)}", "",
           f"Generated {_when(data.generated_at)} by selfheal. Text from incident data is quoted as data.", ""]
    for title, blocks in sections(data):
        out += [f"## {title}", ""]
        for block in blocks:
            if isinstance(block, Para):
                out += [md_text(block.text), ""]
            elif isinstance(block, Code):
                out += [_md_code(block.text, block=True), ""]
            elif isinstance(block, Figure):
                shown = f"No data: {md_text(block.missing)}" if block.missing else f"Chart `{block.chart}`: see the HTML report."
                out += [shown, ""]
            elif block.rows:
                out.append("| " + " | ".join(block.headers) + " |")
                out.append("|" + "---|" * len(block.headers))
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                out.append("")
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f3f4f6;color:#111827;font-size:14px}
main{max-width:1000px;margin:0 auto;padding:24px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.meta{color:#6b7280;margin:0 0 12px}table{border-collapse:collapse;width:100%;margin:8px 0;font-size:12.5px}
th,td{border:1px solid #e5e7eb;padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:break-word}
td code{overflow-wrap:anywhere}
th{background:#f9fafb}code,pre{font-family:ui-monospace,monospace;font-size:12px;background:#f3f4f6}
pre{padding:8px;white-space:pre-wrap;overflow-wrap:anywhere}figure{margin:8px 0}svg{max-width:100%;height:auto}
"""


def _html_cell(cell: Cell) -> str:
    return f"<code>{_e(cell.text)}</code>" if isinstance(cell, Code) else _e(cell)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(data: ReportData) -> str:
    """The report as one HTML file: inline CSS and SVG, no script, and a policy that forbids any fetch."""
    inc = data.incident
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        # Defence in depth: even if something slipped through escaping, the page can load and run nothing.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{_e(inc.incident_id)}: {_e(inc.kind)} on {_e(inc.subject)}</title><style>{CSS}</style></head>",
        f"<body><main><h1>{_e(inc.incident_id)}: {_e(inc.kind)} on {_e(inc.subject)}</h1>",
        f'<p class="meta">Generated {_when(data.generated_at)} by selfheal. Text from incident data is quoted as data.</p>',
    ]
    for title, blocks in sections(data):
        out.append(f'<section data-section="{_e(title)}"><h2>{_e(title)}</h2>')
        for block in blocks:
            if isinstance(block, Para):
                out.append(f"<p>{_e(block.text)}</p>")
            elif isinstance(block, Code):
                out.append(f"<pre>{_e(block.text)}</pre>")
            elif isinstance(block, Figure):
                out.append(f"<figure>{block.svg}</figure>")
            elif block.rows:
                head = "".join(f"<th>{_e(h)}</th>" for h in block.headers)
                body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
