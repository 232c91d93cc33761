"""One self-contained ``report.html`` per run (figures inlined as base64 PNG, no script, no external
style), next to the PNGs and a ``numbers.json`` of every number shown."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; } pre { background: #f7f7f7; padding: .6em; overflow-x: auto; }
"""


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def to_jsonable(value):
    """numpy / torch / dataclass values -> JSON types (NaN -> null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def format_cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(float(value)) else f"{float(value):.4g}"
    return html.escape(str(value))


def render_html(title: str, sections: list[Section], config: dict, intro: str = "") -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for paragraph in filter(None, section.text.split("\n\n")):
            parts.append(f"<p>{html.escape(paragraph)}</p>")
        for table in section.tables:
            parts.append(f"<table><caption>{html.escape(table.caption)}</caption><tr>")
            parts.extend(f"<th>{html.escape(str(h))}</th>" for h in table.header)
            parts.append("</tr>")
            for row in table.rows:
                parts.append("<tr>" + "".join(f"<td>{format_cell(v)}</td>" for v in row) + "</tr>")
            parts.append("</table>")
        for figure in section.figures:
            data = base64.b64encode(Path(figure).read_bytes()).decode("ascii")
            name = html.escape(Path(figure).name)
            parts.append(f"<figure><img alt='{name}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{name}</figcaption></figure>")
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(to_jsonable(config), indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir: str | Path, title: str, sections: list[Section], numbers: dict, config: dict,
                 intro: str = "") -> Path:
    """Write ``report.html`` and ``numbers.json`` into ``out_dir`` (the figures are already there). A run into a
    folder that holds an earlier run's report replaces it: the earlier run's figures that this one did not draw
    (``numbers.json`` lists them) are removed, so none is taken for part of this run; other files stay."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = sorted({Path(f).name for section in sections for f in section.figures})
    previous = out_dir / "numbers.json"
    if previous.exists():
        try:
            earlier = json.loads(previous.read_text()).get("figures", [])
        except json.JSONDecodeError:
            earlier = []
        for name in set(earlier) - set(drawn):
            (out_dir / Path(name).name).unlink(missing_ok=True)
    previous.write_text(json.dumps(to_jsonable({"config": config, **numbers, "figures": drawn}), indent=1))
    path = out_dir / "report.html"
    path.write_text(render_html(title, sections, config, intro), encoding="utf-8")
    return path
