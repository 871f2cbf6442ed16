"""The audit as one self-contained HTML page: every table, and the figures embedded as PNG data.

The page needs nothing beside itself (no script, no stylesheet or image file), so it opens in any
browser and can be attached to a release ticket as it is.  Its tables are the report's
(:meth:`~apkit.evaluation.report.AuditReport.tables`), rendered by :func:`apkit.evaluation.tables.to_html`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apkit.evaluation.tables import Interval, Table, format_cell, to_html

__all__ = ["render_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 0.85em; } img { max-width: 100%; border: 1px solid #ddd; }
.verdict { border: 2px solid #888; padding: 0.6em 1em; margin: 1em 0; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #c62828; font-weight: bold; }
.warning { color: #8a5300; }
"""


def _image(path: Path, title: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}"><figcaption class="note">' \
           f"{html.escape(title)}</figcaption></figure>"


def _layers_table(layers: Mapping[str, Mapping[str, str | None]]) -> Table:
    return Table("Layers explained", ["model", "method", "layer"],
                 [[model, method, layer or "input"] for model, methods in layers.items()
                  for method, layer in methods.items()])


def _interval(value: Mapping[str, float] | None, *, signed: bool) -> str:
    return format_cell(Interval.from_dict(value, signed=signed))


def _verdict(report: Any) -> list[str]:
    """The verdict block: every gate judged (passed or failed, with its value), then each student's
    headline differences from the teacher."""
    parts = ["<section class='verdict' id='verdict'><h2>Verdict</h2>"]
    if report.verdict:
        failed = [row for row in report.verdict if not row["passed"]]
        parts.append(f"<p class='{'fail' if failed else 'pass'}'>"
                     f"{'FAILED' if failed else 'PASSED'}: {len(report.verdict) - len(failed)} of "
                     f"{len(report.verdict)} gate checks passed.</p><ul>")
        parts += [f"<li><span class='{'pass' if row['passed'] else 'fail'}'>{'passed' if row['passed'] else 'failed'}"
                  f"</span> {html.escape(row['gate'])} for {html.escape(row['who'])}: "
                  f"{html.escape(str(row['interval']))}, pessimistic {row['value']:.4f}</li>" for row in report.verdict]
        parts.append("</ul>")
    else:
        parts.append("<p class='note'>No release gate was set (apkit audit --fail-under NAME=VALUE).</p>")
    for student in report.settings.get("students", []):
        found = report.headline(student)
        shown = [f"{'' if name in _VALUES else 'Δ '}{name} {html.escape(_interval(value, signed=name not in _VALUES))}"
                 for name, value in found.items()]
        parts.append(f"<p><b>{html.escape(student)}</b> against the teacher: {'; '.join(shown) or 'nothing measured'}"
                     "</p>")
    parts += [f"<p class='warning'>Warning: {html.escape(line)}</p>" for line in report.warnings]
    parts.append("</section>")
    return parts


_VALUES = ("agreement", "cos", "l2")  # headline entries that are values, not differences


def render_html(report: Any, figures: Mapping[str, Path]) -> str:
    """The page of an :class:`~apkit.evaluation.report.AuditReport`, with the PNG ``figures`` ``{title: path}``."""
    settings = report.settings
    parts = ["<h1>apkit audit</h1>",
             f"<p class='note'>Students: {html.escape(', '.join(settings.get('students', [])))}; attribution "
             f"methods: {html.escape(', '.join(settings.get('attribution_methods', [])))}; protocol "
             f"{html.escape(str(settings.get('protocol')))}.</p>", *_verdict(report)]
    tables = report.tables() + ([_layers_table(report.layers)] if report.layers else [])
    parts += [to_html(table) for table in tables]
    parts += ["<h2>Figures</h2>", *[_image(path, title) for title, path in figures.items()]]
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>apkit audit</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
