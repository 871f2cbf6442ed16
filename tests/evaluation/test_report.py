"""AuditReport on its own: reports built by hand (2 models x 2 methods, NaN and None values), no model."""

import copy
import csv
import io
import json
import math
import os

import pytest

from apkit import AuditReport
from apkit.core.errors import ValidationError
from apkit.evaluation import Gate, parse_gates

NAN = float("nan")
DASH = "\u2013"  # the en dash that marks a missing value in the markdown tables


def make_report():
    return AuditReport(
        predictive={
            # the student has a column the teacher lacks: the columns are the union, in order of appearance
            "teacher": {"map": 0.95, "f1": 0.875, "images": 20},
            "student": {"map": 0.81234, "f1": NAN, "images": 20, "top1": 0.5},
        },
        rows=[
            {"model": "teacher", "method": "gradcam", "auc": 0.96712, "pointing": 0.66, "cos": NAN, "l2": NAN,
             "kept": 3, "skipped": 1},
            {"model": "teacher", "method": "lrp", "auc": 0.9, "pointing": 0.5, "cos": None, "l2": None,
             "kept": 2, "skipped": 0},
            {"model": "student", "method": "gradcam", "auc": 0.93333, "pointing": 1.0, "cos": 0.98766, "l2": 0.15,
             "kept": 2, "skipped": 2},
            {"model": "student", "method": "lrp", "auc": NAN, "pointing": 0.0, "cos": -0.25, "l2": 1.58114,
             "kept": 0, "skipped": 4},
        ],
        pairs={
            ("teacher", "gradcam"): {"image": [0, 0, 1, 2], "class": [2, 5, 2, 1], "auc": [0.9, NAN, 0.8, 1.0],
                                     "hit": [1.0, 0.0, NAN, 1.0], "cos": [NAN, NAN, NAN, NAN]},
            ("teacher", "lrp"): {"image": [0, 1], "class": [2, 2], "auc": [0.85, 0.95], "hit": [1.0, 0.0],
                                 "cos": [NAN, NAN]},
            ("student", "gradcam"): {"image": [0, 1, 2, 3], "class": [2, 2, 1, 0], "auc": [0.9, 0.96, NAN, 0.94],
                                     "hit": [1.0, 1.0, NAN, NAN], "cos": [0.99, 0.98532, NAN, NAN]},
            ("student", "lrp"): {"image": [], "class": [], "auc": [], "hit": [], "cos": []},
        },
        settings={"methods": ["gradcam", "lrp"], "protocol": "voc", "tolerance": 0, "batch_size": 32,
                  "device": "cpu", "students": ["student"]},
    )


def same(a, b):
    """Deep equality in which NaN equals NaN (and a tuple equals a list, as JSON has only lists)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------ row


@pytest.mark.parametrize("index, model, method", [
    (0, "teacher", "gradcam"), (1, "teacher", "lrp"), (2, "student", "gradcam"), (3, "student", "lrp"),
])
def test_row_returns_the_row_of_the_model_and_method(index, model, method):
    report = make_report()
    row = report.row(model, method)
    assert row is report.rows[index]
    assert row["model"] == model and row["method"] == method


@pytest.mark.parametrize("model, method", [
    ("pruned", "gradcam"),  # unknown model
    ("teacher", "rap"),  # unknown method
    ("gradcam", "teacher"),  # arguments swapped
    ("Teacher", "gradcam"),  # names are case-sensitive
])
def test_row_of_a_missing_pair_names_the_model_and_method(model, method):
    with pytest.raises(ValidationError) as info:
        make_report().row(model, method)
    assert repr(model) in str(info.value) and repr(method) in str(info.value)


def test_row_of_an_empty_report_raises():
    with pytest.raises(ValidationError, match="'teacher'.*'gradcam'"):
        AuditReport().row("teacher", "gradcam")


# ------------------------------------------------------------------------------------------------ to_dict


def test_to_dict_holds_everything_with_pairs_keyed_by_model_and_method():
    report = make_report()
    expected = copy.deepcopy(report)
    data = report.to_dict()
    assert set(data) == {"settings", "predictive", "rows", "pairs", "image_names", "class_names", "warnings", "verdict"}
    assert same(data["settings"], expected.settings)
    assert same(data["predictive"], expected.predictive)
    assert same(data["rows"], expected.rows)
    assert isinstance(data["pairs"], list) and len(data["pairs"]) == len(expected.pairs) == 4
    for entry, ((model, method), columns) in zip(data["pairs"], expected.pairs.items()):
        assert entry["model"] == model and entry["method"] == method
        assert set(entry) == {"model", "method", *columns}
        for column, values in columns.to_dict().items():  # every per-pair list, value for value
            assert same(entry[column], values), (model, method, column)
    assert same(report.to_dict(), data)  # to_dict leaves the report as it was


def test_to_dict_is_json_serialisable():
    data = make_report().to_dict()
    text = json.dumps(data)  # NaN is written as Python's json writes it (NaN), None as null
    assert same(json.loads(text), data)
    assert json.loads(text)["rows"][1]["cos"] is None


# ------------------------------------------------------------------------------------------------ to_markdown


EXPECTED_MARKDOWN = """\
## Predictions

| model | map | f1 | images | top1 |
|---|---|---|---|---|
| teacher | 0.9500 | 0.8750 | 20 | – |
| student | 0.8123 | – | 20 | 0.5000 |

## Attribution

AUC and Point Acc on the pairs with a mask; Cos and L2 against the teacher's maps.

| model | method | AUC | Point Acc | Cos | L2 | pairs kept |
|---|---|---|---|---|---|---|
| teacher | gradcam | 0.9671 | 0.6600 | – | – | 3 |
| teacher | lrp | 0.9000 | 0.5000 | – | – | 2 |
| student | gradcam | 0.9333 | 1.0000 | 0.9877 | 0.1500 | 2 |
| student | lrp | – | 0.0000 | -0.2500 | 1.5811 | 0 |
"""


def test_to_markdown_exact_text():
    text = make_report().to_markdown()
    assert text == EXPECTED_MARKDOWN
    assert DASH in text and "nan" not in text.lower() and "None" not in text


# ------------------------------------------------------------------------------------------------ to_csv

EXPECTED_CSV = [
    ["model", "method", "auc", "pointing", "cos", "l2", "kept", "skipped", "map", "f1", "images", "top1"],
    ["teacher", "gradcam", "0.96712", "0.66", "nan", "nan", "3", "1", "0.95", "0.875", "20", ""],
    ["teacher", "lrp", "0.9", "0.5", "", "", "2", "0", "0.95", "0.875", "20", ""],
    ["student", "gradcam", "0.93333", "1.0", "0.98766", "0.15", "2", "2", "0.81234", "nan", "20", "0.5"],
    ["student", "lrp", "nan", "0.0", "-0.25", "1.58114", "0", "4", "0.81234", "nan", "20", "0.5"],
]


def test_to_csv_header_and_every_cell():
    text = make_report().to_csv()
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == EXPECTED_CSV[0]
    assert len(parsed) == len(EXPECTED_CSV)
    for line, (got, expected) in enumerate(zip(parsed[1:], EXPECTED_CSV[1:]), start=1):
        assert got == expected, f"line {line}"
    # numbers read back as the same numbers (NaN as NaN; None as an empty cell)
    report = make_report()
    for got, row in zip(parsed[1:], report.rows):
        for cell, column in zip(got[2:8], ["auc", "pointing", "cos", "l2", "kept", "skipped"]):
            value = row[column]
            if value is None:
                assert cell == ""
            else:
                assert same(type(value)(cell), value)


# ------------------------------------------------------------------------------------------------ save


def test_save_writes_the_four_files_and_nothing_else(tmp_path):
    report = make_report()
    out = tmp_path / "nested" / "audit"  # created on the way
    paths = report.save(out)
    assert paths == {"markdown": out / "report.md", "csv": out / "report.csv", "json": out / "report.json",
                     "html": out / "report.html"}
    # no temporary file left, and no figures folder for a report without per-pair values to draw
    assert sorted(os.listdir(out)) == ["report.csv", "report.html", "report.json", "report.md"]
    # byte for byte the methods' output (read without newline translation: the CSV's \r\n stays)
    assert (out / "report.md").read_bytes().decode("utf-8") == report.to_markdown()
    assert (out / "report.csv").read_bytes().decode("utf-8") == report.to_csv()

    def no_constants(token):
        raise AssertionError(f"report.json holds {token}, which is not JSON")

    text = (out / "report.json").read_text(encoding="utf-8")
    data = json.loads(text, parse_constant=no_constants)  # strict JSON: NaN written as null
    assert same(data, nan_to_none(report.to_dict()))


def test_save_overwrites_and_keeps_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    report = make_report()
    report.save(tmp_path)
    report.rows[0]["auc"] = 0.5
    report.predictive["teacher"]["map"] = NAN
    report.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "report.csv", "report.html", "report.json", "report.md"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "report.md").read_bytes().decode("utf-8") == report.to_markdown()
    assert "| teacher | gradcam | 0.5000 |" in report.to_markdown()
    assert (tmp_path / "report.csv").read_bytes().decode("utf-8") == report.to_csv()
    assert same(json.loads((tmp_path / "report.json").read_text()), nan_to_none(report.to_dict()))


def test_failed_save_leaves_no_temporary_file_and_the_previous_json(tmp_path):
    report = make_report()
    report.save(tmp_path)
    before = (tmp_path / "report.json").read_bytes()
    report.settings["device"] = object()  # not JSON-serialisable
    with pytest.raises((TypeError, ValueError)):
        report.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["report.csv", "report.html", "report.json", "report.md"]
    assert (tmp_path / "report.json").read_bytes() == before


# ------------------------------------------------------------------------------------------------ gates
# Hand-made intervals, asymmetric around the estimate, so that a gate judged on the wrong end fails a test.

GATE_INTERVALS = {
    # name of the gate: (where its interval lives, the interval, the pessimistic value, "at least" or "at most")
    "cos": ("attribution", {"estimate": 0.875, "low": 0.75, "high": 0.9375}, 0.75, "at least"),
    "l2": ("attribution", {"estimate": 0.25, "low": 0.125, "high": 0.5}, 0.5, "at most"),
    "auc_drop": ("attribution", {"estimate": -0.0625, "low": -0.25, "high": 0.125}, 0.25, "at most"),
    "pointing_drop": ("attribution", {"estimate": 0.0625, "low": -0.125, "high": 0.375}, 0.125, "at most"),
    "map_drop": ("predictive", {"estimate": -0.03125, "low": -0.0625, "high": 0.25}, 0.0625, "at most"),
    "map_class_drop": ("predictive", {"estimate": -0.125, "low": -0.5, "high": 0.0625}, 0.5, "at most"),
    "f1_drop": ("predictive", {"estimate": 0.125, "low": 0.0625, "high": 0.25}, -0.0625, "at most"),
    "top1_drop": ("predictive", {"estimate": -0.375, "low": -0.4375, "high": -0.25}, 0.4375, "at most"),
    "top5_drop": ("predictive", {"estimate": -0.125, "low": -0.1875, "high": 0.0}, 0.1875, "at most"),
    "agreement": ("predictive", {"estimate": 0.8125, "low": 0.6875, "high": 0.9375}, 0.6875, "at least"),
    # deletion rises when the student's maps are less faithful: judged on the high end of student minus teacher
    "deletion_rise": ("attribution", {"estimate": 0.0625, "low": -0.03125, "high": 0.125}, 0.125, "at most"),
    "insertion_drop": ("attribution", {"estimate": -0.0625, "low": -0.125, "high": 0.03125}, 0.125, "at most"),
    "road_drop": ("attribution", {"estimate": 0.03125, "low": -0.0625, "high": 0.125}, 0.0625, "at most"),
}
_SOURCES = {"cos": "cos", "l2": "l2", "auc_drop": "auc", "pointing_drop": "pointing", "map_drop": "map_image",
            "map_class_drop": "map_class", "f1_drop": "f1", "top1_drop": "top1", "top5_drop": "top5",
            "agreement": "agreement", "deletion_rise": "deletion", "insertion_drop": "insertion", "road_drop": "road"}


def gated_report(name, interval):
    where = GATE_INTERVALS[name][0]
    report = AuditReport()
    if where == "attribution":
        report.comparisons = [{"model": "small", "method": "gradcam", _SOURCES[name]: interval}]
    else:
        report.predictive_comparisons = {"small": {_SOURCES[name]: interval}}
    return report


def test_every_gate_is_tested():
    from apkit.core.names import GATE_NAMES

    assert set(GATE_INTERVALS) == set(GATE_NAMES)


@pytest.mark.parametrize("name", list(GATE_INTERVALS))
def test_a_gate_passes_at_its_pessimistic_value_and_fails_just_beyond(name):
    _, interval, worst, direction = GATE_INTERVALS[name]
    report = gated_report(name, interval)
    assert report.gate([f"{name}={worst}"]) == []  # exactly the pessimistic end: passes
    beyond = worst + 1e-4 if direction == "at least" else worst - 1e-4
    failures = report.gate([f"{name}={beyond}"])
    assert len(failures) == 1 and f"gate {name}={beyond:g} failed for student small" in failures[0]
    assert f"{_SOURCES[name]} " in failures[0] and f"{worst:.4f}" in failures[0]
    # A threshold on the generous side of the pessimistic end passes too.
    generous = worst - 0.5 if direction == "at least" else worst + 0.5
    assert report.gate([f"{name}={generous}"]) == []


def test_a_gate_without_bounds_judges_the_estimate_and_a_missing_estimate_fails():
    report = gated_report("cos", {"estimate": 0.8125, "low": NAN, "high": NAN})
    assert report.gate(["cos=0.8125"]) == [] and len(report.gate(["cos=0.82"])) == 1
    report = gated_report("auc_drop", {"estimate": -0.125, "low": None, "high": None})
    assert report.gate(["auc_drop=0.125"]) == [] and len(report.gate(["auc_drop=0.1"])) == 1
    failures = gated_report("l2", {"estimate": NAN, "low": NAN, "high": NAN}).gate(["l2=10"])
    assert len(failures) == 1 and "pessimistic nan" in failures[0]


def test_a_gate_with_nothing_to_judge_raises():
    with pytest.raises(ValidationError, match="nothing to judge"):
        gated_report("cos", {"estimate": 0.9}).gate(["map_drop=0.1"])


def test_gate_objects_and_strings_are_the_same_gate():
    report = gated_report("l2", GATE_INTERVALS["l2"][1])
    assert report.gate([Gate("l2", 0.4)]) == report.gate(["l2=0.4"]) and len(report.gate(["l2=0.4"])) == 1


def test_parse_gates_reads_every_name_and_refuses_bad_ones():
    from apkit.core.names import GATE_NAMES

    assert parse_gates([f"{name}=0.5" for name in GATE_NAMES]) == [Gate(name, 0.5) for name in GATE_NAMES]
    assert parse_gates(["auc_drop=-1"]) == [Gate("auc_drop", -1.0)] and str(Gate("cos", 0.95)) == "cos=0.95"
    refused = (("cos", "NAME=VALUE"), ("cosine=0.9", "unknown gate 'cosine'"), ("cos=high", "needs a number"),
               ("cos=nan", "needs a number"), ("cos=true", "needs a number"))
    for item, fragment in refused:
        with pytest.raises(ValidationError, match=fragment):
            parse_gates([item])
