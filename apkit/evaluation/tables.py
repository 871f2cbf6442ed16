"""One table model and its renderers: Markdown, HTML and CSV, with one rule for every cell.

The audit's report (``report.md``, ``report.csv``, ``report.html``) and the benchmark's
``tables.md`` build :class:`Table` values and render them here.  A cell is rendered by
:func:`format_cell`: ``None`` and NaN are missing and show as an en dash, a float shows with a
fixed number of digits, an :class:`Interval` as ``estimate [low, high]``, anything else as its
text.  CSV keeps the raw values instead (numbers read back as numbers).
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MISSING", "Interval", "Table", "format_cell", "is_missing", "to_csv", "to_html", "to_markdown"]

MISSING = "\u2013"  # an en dash marks a value that was not measured


def is_missing(value: Any) -> bool:
    """``None`` or a float NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Interval:
    """An estimate with an optional interval; ``signed`` shows a ``+`` on positive numbers (differences)."""

    estimate: float | None
    low: float | None = None
    high: float | None = None
    signed: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, float] | None, *, signed: bool = False) -> Interval | None:
        """The interval of ``{"estimate", "low", "high"}`` (``None`` stays ``None``)."""
        if not data:
            return None
        return cls(data.get("estimate"), data.get("low"), data.get("high"), signed)

    def parts(self, digits: int = 4) -> tuple[str, str | None]:
        """The estimate's text and the bounds' text (``None`` without bounds)."""
        if is_missing(self.estimate):
            return MISSING, None
        form = f"{'+' if self.signed else ''}.{digits}f"
        if is_missing(self.low):
            return format(self.estimate, form), None
        return format(self.estimate, form), f"[{format(self.low, form)}, {format(self.high, form)}]"


def format_cell(value: Any, *, digits: int = 4, scale: float | None = None) -> str:
    """The text of one cell: missing values as an en dash, floats with ``digits`` decimals.

    ``scale`` multiplies a float first (e.g. 100 for percentages).

    Examples
    --------
    >>> format_cell(0.123456), format_cell(float("nan")), format_cell(None), format_cell(3)
    ('0.1235', '–', '–', '3')
    >>> format_cell(0.5, digits=2, scale=100), format_cell(Interval(0.01, -0.02, 0.03, signed=True))
    ('50.00', '+0.0100 [-0.0200, +0.0300]')
    """
    if is_missing(value):
        return MISSING
    if isinstance(value, Interval):
        main, bounds = value.parts(digits)
        return main if bounds is None else f"{main} {bounds}"
    if isinstance(value, float):
        return f"{(scale * value if scale is not None else value):.{digits}f}"
    return str(value)


@dataclass(frozen=True)
class Table:
    """A table: a ``title`` (optional), its ``columns``, its ``rows`` of cells, and a ``note`` under the title."""

    title: str | None
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]] = field(default_factory=list)
    note: str | None = None


def to_markdown(table: Table, *, level: int = 2) -> str:
    """The table as Markdown: a heading of ``level`` for the title, the note, then the pipe table.

    Examples
    --------
    >>> print(to_markdown(Table("Scores", ["model", "AUC"], [["a", 0.9], ["b", None]], note="Means.")))
    ## Scores
    <BLANKLINE>
    Means.
    <BLANKLINE>
    | model | AUC |
    |---|---|
    | a | 0.9000 |
    | b | – |
    """
    lines = []
    if table.title:
        lines += [f"{'#' * level} {markdown_text(table.title)}", ""]
    if table.note:
        lines += [markdown_text(table.note), ""]
    lines += ["| " + " | ".join(markdown_cell(column) for column in table.columns) + " |",
              "|---" * len(table.columns) + "|"]
    lines += ["| " + " | ".join(markdown_cell(format_cell(cell)) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


def markdown_text(text: Any) -> str:
    """``text`` with HTML's special characters escaped, so that Markdown renders it as text, never as HTML.

    Examples
    --------
    >>> markdown_text("<script>alert(1)</script> & co")
    '&lt;script&gt;alert(1)&lt;/script&gt; &amp; co'
    """
    return html.escape(str(text), quote=False)


def markdown_cell(text: Any) -> str:
    """One cell of a Markdown pipe table: HTML escaped, ``|`` escaped (it would end the cell), one line.

    Examples
    --------
    >>> print(markdown_cell("cat|dog <img src=x onerror=alert(1)>"))
    cat\\|dog &lt;img src=x onerror=alert(1)&gt;
    """
    return " ".join(markdown_text(text).split()).replace("|", "\\|")


def _html_cell(value: Any) -> str:
    if isinstance(value, Interval):
        main, bounds = value.parts()
        return html.escape(main) if bounds is None else f"{html.escape(main)}<br><small>{html.escape(bounds)}</small>"
    return html.escape(format_cell(value))


def to_html(table: Table, *, level: int = 2) -> str:
    """The table as HTML (every text escaped): a heading for the title, the note, then the table."""
    parts = []
    if table.title:
        parts.append(f"<h{level}>{html.escape(table.title)}</h{level}>")
    if table.note:
        parts.append(f"<p class='note'>{html.escape(table.note)}</p>")
    header = "".join(f"<th>{html.escape(str(name))}</th>" for name in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{_html_cell(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    parts.append(f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>")
    return "".join(parts)


def to_csv(table: Table) -> str:
    """The columns and rows as CSV with the raw values (NaN as ``nan``, ``None`` as an empty cell).

    Text cells are made safe for spreadsheets (:func:`csv_cell`).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([csv_cell(column) for column in table.columns])
    writer.writerows([csv_cell(cell) for cell in row] for row in table.rows)
    return buffer.getvalue()


#: A cell starting with one of these is read as a formula by spreadsheets (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|nan)", re.IGNORECASE)


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run: text starting with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return gets a leading ``'`` (as OWASP advises), unless the whole text is a number.

    Numbers stay numbers: a negative value (``-0.25``, or the text ``"-0.25"``) is data that every
    spreadsheet reads as a number, not a formula, so it is written as it is.  Other values are
    returned unchanged.

    Examples
    --------
    >>> print(csv_cell('=HYPERLINK("http://x","click")'), csv_cell("-0.25"), csv_cell(-0.25), csv_cell("-1+cmd"))
    '=HYPERLINK("http://x","click") -0.25 -0.25 '-1+cmd
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS) or _NUMBER.fullmatch(value):
        return value
    return "'" + value
