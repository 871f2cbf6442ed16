"""The audit as one self-contained HTML page: every table, and the figures embedded as PNG data.

The page needs nothing beside itself (no script, no stylesheet or image file), so it opens in any
browser and can be attached to a release ticket as it is.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["render_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 0.85em; } img { max-width: 100%; border: 1px solid #ddd; }
"""


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, Mapping) and "estimate" in value:
        if value["estimate"] is None or math.isnan(value["estimate"]):
            return "–"
        text = f"{value['estimate']:.4f}"
        low, high = value.get("low"), value.get("high")
        return text if low is None or math.isnan(low) else f"{text}<br><small>[{low:.4f}, {high:.4f}]</small>"
    return html.escape(str(value))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _image(path: Path, title: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}"><figcaption class="note">' \
           f"{html.escape(title)}</figcaption></figure>"


def _columns(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for values in rows.values():
        names += [n for n in values if n not in names]
    return names


def render_html(report: Any, figures: Mapping[str, Path]) -> str:
    """The page of an :class:`~apkit.evaluation.report.AuditReport`, with the PNG ``figures`` ``{title: path}``."""
    settings = report.settings
    parts = ["<h1>apkit audit</h1>",
             f"<p class='note'>Students: {html.escape(', '.join(settings.get('students', [])))}; attribution "
             f"methods: {html.escape(', '.join(settings.get('attribution_methods', [])))}; protocol "
             f"{html.escape(str(settings.get('protocol')))}.</p>"]
    predictive = _columns(report.predictive)
    rows = [[m, *[v.get(c) for c in predictive]] for m, v in report.predictive.items()]
    parts += ["<h2>Predictions</h2>", _table(["model", *predictive], rows)]
    parts += ["<h2>Attribution</h2>", _table(["model", "method", "AUC", "Point Acc", "Cos", "L2", "pairs kept"],
                                             [[r["model"], r["method"], r["auc"], r["pointing"], r["cos"], r["l2"],
                                               r["kept"]] for r in report.rows])]
    if report.comparisons:
        level = f"{100 * settings.get('confidence', 0.95):g} %"
        scores = [k for k in report.comparisons[0] if k == "auc" or k.startswith("pointing")]
        parts += [f"<h2>Each student against the teacher</h2><p class='note'>Student minus teacher on the (image, "
                  f"class) pairs both keep, with {level} intervals from a paired bootstrap over images "
                  f"({settings.get('resamples')} resamples).</p>",
                  _table(["student", "method", *[f"Δ {s}" for s in scores], "Cos", "L2", "common pairs"],
                         [[r["model"], r["method"], *[r[s] for s in scores], r["cos"], r["l2"], r["common_pairs"]]
                          for r in report.comparisons])]
    if report.predictive_comparisons:
        names = _columns(report.predictive_comparisons)
        parts.append(_table(["student", *[f"Δ {n}" for n in names]],
                            [[s, *[m.get(n) for n in names]] for s, m in report.predictive_comparisons.items()]))
    if report.per_class:
        parts += ["<h2>Per class</h2>", _table(["model", "method", "class", "pairs kept", "AUC", "Point Acc", "Cos"],
                                               [[r["model"], r["method"], r["class"], r["kept"], r["auc"],
                                                 r["pointing"], r["cos"]] for r in report.per_class])]
    if report.changed:
        parts += ["<h2>The pairs whose maps changed most</h2>",
                  _table(["student", "method", "image", "class", "Cos", "AUC"],
                         [[r["model"], r["method"], r["image"], r["class"], r["cos"], r["auc"]]
                          for r in report.changed])]
    if report.layers:
        parts += ["<h2>Layers explained</h2>", _table(["model", "method", "layer"],
                                                      [[m, k, layer or "input"] for m, methods in report.layers.items()
                                                       for k, layer in methods.items()])]
    parts += ["<h2>Figures</h2>", *[_image(path, title) for title, path in figures.items()]]
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>apkit audit</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
