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
        "### Scores &lt;all&gt;\n\nMeans &amp; intervals.\n\n"
        "| model | AUC | Δ auc | kept |\n"
        "|---|---|---|---|\n"
        "| a\\|b | 0.1235 | +0.0125 [-0.2500, +0.5000] | 3 |\n"
        "| =SUM(A1:A2) | – | – | – |\n"
        "| &lt;script&gt;x&lt;/script&gt; | 1.0000 | -0.5000 | 0 |")
    untitled = Table(None, ["x"], [[1]])
    assert to_markdown(untitled) == "| x |\n|---|\n| 1 |"


def test_csv_keeps_raw_values_and_defuses_formulas():
    text = to_csv(Table(None, ["model", "auc", "kept"], [["=SUM(A1:A2)", math.nan, None], ["b", 0.123456, 3]]))
    assert list(csv.reader(io.StringIO(text, newline=""))) == [
        ["model", "auc", "kept"], ["'=SUM(A1:A2)", "nan", ""], ["b", "0.123456", "3"]]
    assert text.endswith("\r\n")


def test_csv_prefixes_every_formula_start_but_keeps_numbers():
    """OWASP's list (=, +, -, @, tab, carriage return); a number, negative or signed, is data and stays as it is."""
    rows = [["=1+2", "+cmd", "-cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "\rx", "-0.25", "+3", "-1e-05", -0.5, "-inf"]]
    header, parsed = csv.reader(io.StringIO(to_csv(Table(None, ["c"] * 11, rows)), newline=""))
    assert header == ["c"] * 11
    assert parsed == ["'=1+2", "'+cmd", "'-cmd|' /C calc'!A0", "'@SUM(A1)", "'\tx", "'\rx", "-0.25", "+3", "-1e-05",
                      "-0.5", "-inf"]


def test_markdown_cells_carry_no_raw_html_and_no_extra_cells():
    from apkit.evaluation.tables import markdown_cell

    page = to_markdown(Table("<b>t</b>", ["a|b", "c"], [["<img src=x onerror=alert(1)>", "x | y\nz & w"]]))
    assert "<" not in page and ">" not in page.replace("&gt;", "")
    header, _, row = page.split("\n")[2:5]
    assert header.replace("\\|", "").count("|") == row.replace("\\|", "").count("|") == 3
    assert markdown_cell("x | y\nz & w") == "x \\| y z &amp; w"


def test_html_escapes_every_text():
    page = to_html(TABLE)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<h2>Scores &lt;all&gt;</h2>" in page and "<p class='note'>Means &amp; intervals.</p>" in page
    assert "<td>+0.0125<br><small>[-0.2500, +0.5000]</small></td>" in page
    assert page.count("<tr>") == 4 and page.count(f"<td>{MISSING}</td>") == 3
