"""The table renderer: one cell rule, Markdown, CSV (raw values) and HTML (escaped)."""

import csv
import io
import math

from apkit.evaluation.tables import MISSING, Interval, Table, format_cell, to_csv, to_html, to_markdown

TABLE = Table("Scores <all>", ["model", "AUC", "Δ auc", "kept"],
              [["a|b", 0.123456, Interval(0.0125, -0.25, 0.5, signed=True), 3],
               ["=SUM(A1:A2)", math.nan, Interval(None), None],
               ["<script>x</script>", 1.0, Interval(-0.5), 0]],
              note="Means & intervals.")


def test_cells_follow_one_rule():
    assert format_cell(None) == format_cell(math.nan) == MISSING == "\u2013"
    assert format_cell(0.123456) == "0.1235" and format_cell(-0.25) == "-0.2500" and format_cell(7) == "7"
    assert format_cell(0.123456, digits=2, scale=100) == "12.35" and format_cell("text") == "text"
    assert format_cell(True) == "True"
    assert format_cell(Interval(0.5, 0.25, 0.75)) == "0.5000 [0.2500, 0.7500]"
    assert format_cell(Interval(0.5, 0.25, 0.75, signed=True)) == "+0.5000 [+0.2500, +0.7500]"
    assert format_cell(Interval(-0.5, math.nan, math.nan, signed=True)) == "-0.5000"
    assert format_cell(Interval(math.nan, 0.1, 0.2)) == MISSING
    assert Interval.from_dict(None) is None and Interval.from_dict({}) is None
    assert Interval.from_dict({"estimate": 1.0, "low": 0.5, "high": 2.0}, signed=True) == Interval(1.0, 0.5, 2.0, True)


def test_markdown_exact_text():
    assert to_markdown(TABLE, level=3) == (
        "### Scores <all>\n\nMeans & intervals.\n\n"
        "| model | AUC | Δ auc | kept |\n"
        "|---|---|---|---|\n"
        "| a|b | 0.1235 | +0.0125 [-0.2500, +0.5000] | 3 |\n"
        "| =SUM(A1:A2) | – | – | – |\n"
        "| <script>x</script> | 1.0000 | -0.5000 | 0 |")
    untitled = Table(None, ["x"], [[1]])
    assert to_markdown(untitled) == "| x |\n|---|\n| 1 |"


def test_csv_keeps_raw_values_and_leaves_formulas_as_they_are():
    text = to_csv(Table(None, ["model", "auc", "kept"], [["=SUM(A1:A2)", math.nan, None], ["b", 0.123456, 3]]))
    assert list(csv.reader(io.StringIO(text, newline=""))) == [
        ["model", "auc", "kept"], ["=SUM(A1:A2)", "nan", ""], ["b", "0.123456", "3"]]
    assert text.endswith("\r\n")


def test_html_escapes_every_text():
    page = to_html(TABLE)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<h2>Scores &lt;all&gt;</h2>" in page and "<p class='note'>Means &amp; intervals.</p>" in page
    assert "<td>+0.0125<br><small>[-0.2500, +0.5000]</small></td>" in page
    assert page.count("<tr>") == 4 and page.count(f"<td>{MISSING}</td>") == 3
