"""Small HTML helpers: a churnguard summary banner on top of Evidently's report, and plain pages."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

STYLE = (
    "font-family:Roboto,Helvetica,Arial,sans-serif;margin:16px;padding:12px 16px;border-radius:6px;"
    "border:1px solid #ccc;background:#fafafa;color:#222"
)
TABLE_STYLE = "border-collapse:collapse;margin:8px 0;font-size:13px"
CELL_STYLE = "border:1px solid #ddd;padding:3px 8px;text-align:left"


def model_label(name: str, version: str) -> str:
    """ "churn-crm v3", or "churn-crm (local folder)" for a model loaded from a path."""
    return f"{name} (local folder)" if version in {"local", "unknown"} else f"{name} v{version}"


def escape(value: object) -> str:
    return html.escape(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], table_id: str = "") -> str:
    head = "".join(f"<th style='{CELL_STYLE}'>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td style='{CELL_STYLE}'>{escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    ident = f" id='{escape(table_id)}'" if table_id else ""
    return f"<table{ident} style='{TABLE_STYLE}'><tr>{head}</tr>{body}</table>"


def banner(title: str, verdict: str, alarm: bool, paragraphs: Sequence[str], tables: Sequence[str]) -> str:
    colour = "#b00020" if alarm else "#1b5e20"
    parts = [
        f"<div id='churnguard-summary' style='{STYLE}'>",
        f"<h2 style='margin:0 0 6px 0'>{escape(title)}</h2>",
        f"<p id='churnguard-verdict' style='font-size:16px;color:{colour};margin:4px 0'>"
        f"<b>{escape(verdict)}</b></p>",
        *(f"<p style='margin:4px 0'>{escape(text)}</p>" for text in paragraphs),
        *tables,
        "</div>",
    ]
    return "".join(parts)


def inject_banner(report_path: Path, banner_html: str) -> None:
    """Put the banner at the top of the page Evidently wrote (right after <body>)."""
    text = report_path.read_text(encoding="utf-8")
    marker = "<body>"
    at = text.find(marker)
    text = (
        text[: at + len(marker)] + banner_html + text[at + len(marker) :] if at >= 0 else banner_html + text
    )
    report_path.write_text(text, encoding="utf-8")


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='UTF-8'>"
        f"<title>{escape(title)}</title></head><body>{body}</body></html>"
    )


def write_report_page(
    path: Path, title: str, sections: Sequence[tuple[str, Sequence[str], Sequence[Sequence[object]]]]
) -> Path:
    """A plain page of titled tables (the outcomes report)."""
    body = [f"<div style='{STYLE}'><h2 style='margin:0 0 6px 0'>{escape(title)}</h2>"]
    for heading, headers, rows in sections:
        body.append(f"<h3>{escape(heading)}</h3>{table(headers, rows)}")
    body.append("</div>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(title, "".join(body)), encoding="utf-8")
    return path
