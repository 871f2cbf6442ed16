"""The audit's report: tables with confidence intervals, the release gates, and its files (Markdown, CSV, JSON, HTML).

:class:`AuditReport` holds what :func:`apkit.evaluation.audit` measured.  ``save`` writes
``report.md`` (linking ``figures/*.png``), ``report.csv``, ``report.json`` (every per-pair value) and
``report.html``, one self-contained page with the figures embedded.  :meth:`AuditReport.gate`
judges ``--fail-under`` thresholds on the pessimistic end of each interval.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apkit.core.errors import ValidationError
from apkit.core.io import atomic_write, atomic_write_json, atomic_write_text
from apkit.core.names import ATTRIBUTION_TITLES, GATE_NAMES
from apkit.core.validation import parse_overrides
from apkit.evaluation.html import render_html
from apkit.evaluation.pairs import PairTable
from apkit.evaluation.tables import Interval, Table, format_cell, is_missing, to_csv, to_markdown
from apkit.viz import plot_attribution_grid, plot_histograms

__all__ = ["ATTRIBUTION_COLUMNS", "AuditReport", "Gate", "parse_gates"]

ATTRIBUTION_COLUMNS = ("auc", "pointing", "cos", "l2")
ATTRIBUTION_HEADINGS = ("AUC", "Point Acc", "Cos", "L2")  # the tables' names of ATTRIBUTION_COLUMNS
# Gates on attribution differences read these comparisons; the predictive ones these metrics.
_GATE_SOURCES = {"cos": "cos", "l2": "l2", "auc_drop": "auc", "pointing_drop": "pointing", "map_drop": "map_image",
                 "map_class_drop": "map_class", "f1_drop": "f1", "top1_drop": "top1"}
_PREDICTIVE_GATES = ("map_drop", "map_class_drop", "f1_drop", "top1_drop")


@dataclass(frozen=True)
class Gate:
    """One release gate: ``name`` (see :data:`apkit.core.names.GATE_NAMES`) and its threshold ``value``."""

    name: str
    value: float

    def __str__(self) -> str:
        return f"{self.name}={self.value:g}"


def parse_gates(items: Iterable[str]) -> list[Gate]:
    """``["cos=0.95", "auc_drop=0.01"]`` -> gates; malformed or unknown ones raise, naming the known ones.

    Examples
    --------
    >>> parse_gates(["cos=0.95", "auc_drop=0.01"])
    [Gate(name='cos', value=0.95), Gate(name='auc_drop', value=0.01)]
    """
    items = list(items)
    for item in items:
        if "=" not in str(item):
            raise ValidationError(f"a gate must look like NAME=VALUE, e.g. cos=0.95 or auc_drop=0.01, got {item!r}")
    gates = []
    for key, value in parse_overrides(items):
        name = ".".join(key)
        if name not in GATE_NAMES:
            raise ValidationError(f"unknown gate {name!r}; use NAME=VALUE with NAME one of: {', '.join(GATE_NAMES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValidationError(f"gate {name!r} needs a number, e.g. {name}=0.95, got {value!r}")
        gates.append(Gate(name, float(value)))
    return gates


@dataclass
class AuditReport:
    """Results of :func:`apkit.evaluation.audit`.

    Attributes
    ----------
    predictive : dict
        ``{model name: {metric: value}}``.
    rows : list of dict
        One row per (model, method): ``auc``, ``pointing``, ``cos``, ``l2`` and the pair counts.
    pairs : dict
        ``{(model, method): PairTable}`` — the per-(image, class) values behind each row (plain
        ``{column: list}`` mappings, as in ``report.json``, are read into tables).
    settings : dict
        The audit's options, for the record.
    comparisons : list of dict
        One per (student, method): the paired differences against the teacher on the pairs both keep
        (``auc``, ``pointing``, ``pointing@t``) and the similarity (``cos``, ``l2``), each
        ``{estimate, low, high}`` (a paired bootstrap over images).
    predictive_comparisons : dict
        ``{student: {metric: {estimate, low, high}}}``: predictive metrics minus the teacher's.
    per_class : list of dict
        Kept pairs, AUC, pointing and cosine per (model, method, class).
    changed : list of dict
        Per (student, method), the pairs whose maps changed most (lowest cosine).
    layers : dict
        ``{model: {method: layer}}``: the layer each layer method explained (chosen or given).
    examples : dict
        Figure material, not written to JSON: images, masks and maps of the most-changed pairs.
    quantized : dict
        ``{student: {...}}`` for every int8 student: ``measured_on`` (which model each number was
        measured on), ``twin`` (its fake-quant twin's agreement with the int8 logits on the audited
        images), ``size`` and ``latency`` against the float teacher (see
        :func:`apkit.models.quantized.audit_quantized`).
    """

    predictive: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    pairs: dict[tuple[str, str], PairTable] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    predictive_comparisons: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    layers: dict[str, dict[str, str | None]] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=dict, repr=False)
    quantized: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        self.pairs = {key: PairTable.from_dict(table) for key, table in self.pairs.items()}

    def row(self, model: str, method: str) -> dict[str, Any]:
        """The row of ``model`` and ``method``."""
        for row in self.rows:
            if row["model"] == model and row["method"] == method:
                return row
        raise ValidationError(f"no row for model {model!r} and method {method!r} in this report")

    def comparison(self, model: str, method: str) -> dict[str, Any]:
        """The comparison of student ``model`` with the teacher under ``method``."""
        for row in self.comparisons:
            if row["model"] == model and row["method"] == method:
                return row
        raise ValidationError(f"no comparison for student {model!r} and method {method!r} in this report")

    def to_dict(self) -> dict[str, Any]:
        """Everything but the figures, as plain JSON-ready data (per-pair values included)."""
        data = {
            "settings": self.settings,
            "predictive": self.predictive,
            "rows": self.rows,
            "pairs": [{"model": m, "method": k, **table.to_dict()} for (m, k), table in self.pairs.items()],
        }
        if self.comparisons or self.predictive_comparisons:
            data.update(comparisons=self.comparisons, predictive_comparisons=self.predictive_comparisons,
                        per_class=self.per_class, changed=self.changed, layers=self.layers)
        if self.quantized:
            data["quantized"] = self.quantized
        return data

    # -- gates ---------------------------------------------------------------------------------
    def gate(self, gates: Iterable[Gate | str]) -> list[str]:
        """The failed gates, one line each (an empty list: every gate passes).

        Each gate is judged on its interval's pessimistic end: ``cos`` on the lower bound (at least
        the value), ``l2`` on the upper bound (at most the value), a ``*_drop`` on the largest drop
        against the teacher the interval allows (at most the value), for every student and method.
        """
        gates = [g if isinstance(g, Gate) else parse_gates([g])[0] for g in gates]
        failures = []
        for gate in gates:
            for who, interval in self._gate_intervals(gate):
                worst, ok = _pessimistic(gate, interval)
                if not ok:
                    shown = format_cell(Interval.from_dict(interval, signed=gate.name.endswith("_drop")))
                    failures.append(f"gate {gate} failed for {who}: {_GATE_SOURCES[gate.name]} {shown}, pessimistic "
                                    f"{'drop ' if gate.name.endswith('_drop') else ''}{worst:.4f}")
        return failures

    def _gate_intervals(self, gate: Gate):
        source = _GATE_SOURCES[gate.name]
        if gate.name in _PREDICTIVE_GATES:
            found = [(f"student {s}", metrics[source]) for s, metrics in self.predictive_comparisons.items()
                     if source in metrics]
        else:
            found = [(f"student {row['model']}, {row['method']}", row[source]) for row in self.comparisons]
        if not found:
            raise ValidationError(f"gate {gate} has nothing to judge in this audit (no {source} was measured)")
        return found

    # -- tables --------------------------------------------------------------------------------
    def tables(self) -> list[Table]:
        """The report's tables, in the order of ``report.md``: predictions, attribution, and for an
        audit with students their comparisons with the teacher, per class, and the most-changed pairs."""
        predictive = _predictive_columns(self.predictive)
        tables = [
            Table("Predictions", ["model", *predictive],
                  [[name, *[values.get(c) for c in predictive]] for name, values in self.predictive.items()]),
            Table("Attribution", ["model", "method", *ATTRIBUTION_HEADINGS, "pairs kept"],
                  [[row["model"], row["method"], *[row[c] for c in ATTRIBUTION_COLUMNS], row["kept"]]
                   for row in self.rows]),
        ]
        tables += self._comparison_tables() + self._predictive_comparison_tables() + self._quantized_tables()
        if self.per_class:
            tables.append(Table("Per class", ["model", "method", "class", "pairs kept", "AUC", "Point Acc", "Cos"],
                                [[r["model"], r["method"], r["class"], r["kept"], r["auc"], r["pointing"], r["cos"]]
                                 for r in self.per_class]))
        if self.changed:
            tables.append(Table("The pairs whose maps changed most (lowest cosine to the teacher's)",
                                ["student", "method", "image", "class", "Cos", "AUC"],
                                [[r["model"], r["method"], r["image"], r["class"], r["cos"], r["auc"]]
                                 for r in self.changed]))
        return tables

    def _comparison_tables(self) -> list[Table]:
        if not self.comparisons:
            return []
        level = f"{100 * self.settings.get('confidence', 0.95):g} %"
        scores = [k for k in self.comparisons[0] if k.startswith("pointing") or k == "auc"]
        tables = [Table(
            f"Each student against the teacher ({level} intervals, paired bootstrap over images, "
            f"{self.settings.get('resamples')} resamples)",
            ["student", "method", *[f"Δ {k}" for k in scores], "Cos", "L2", "common pairs"],
            [[row["model"], row["method"], *[Interval.from_dict(row[k], signed=True) for k in scores],
              Interval.from_dict(row["cos"]), Interval.from_dict(row["l2"]), row["common_pairs"]]
             for row in self.comparisons],
            note="Differences (student minus teacher) on the (image, class) pairs both keep; Cos and L2 compare "
                 "the student's maps with the teacher's.")]
        return tables

    def _quantized_tables(self) -> list[Table]:
        if not self.quantized:
            return []
        return [Table("Int8 students: predictions measured on the int8 model, attribution on its fake-quant twin",
                      ["student", "bits", "twin max |Δ logit|", "top-1 agreement", "bytes", "× smaller",
                       "CPU batch s", "× faster"],
                      [[name, q["bits"], q["twin"]["max_abs_diff"], q["twin"]["top1_agreement"], q["size"]["bytes"],
                        q["size"]["ratio"], q["latency"]["seconds"], q["latency"]["speedup"]]
                       for name, q in self.quantized.items()])]

    def _predictive_comparison_tables(self) -> list[Table]:
        if not (self.comparisons and self.predictive_comparisons):
            return []
        names = _predictive_columns(self.predictive_comparisons)
        return [Table(None, ["student", *[f"Δ {n}" for n in names]],
                      [[student, *[Interval.from_dict(metrics.get(n), signed=True) for n in names]]
                       for student, metrics in self.predictive_comparisons.items()])]

    # -- text ----------------------------------------------------------------------------------
    def to_markdown(self, *, figures: Mapping[str, str] | None = None) -> str:
        """The tables (and links to ``figures``, ``{title: relative path}``) as Markdown."""
        blocks = [to_markdown(table) for table in self.tables()]
        blocks += [f"![{title}]({link})" for title, link in (figures or {}).items()]
        return "\n\n".join(blocks) + "\n"

    def to_csv(self) -> str:
        """The per-(model, method) rows as CSV, with the model's predictive metrics repeated on each row."""
        columns = ["model", "method", *ATTRIBUTION_COLUMNS, "kept", "skipped"]
        predictive = _predictive_columns(self.predictive)
        rows = [[row[c] for c in columns] + [self.predictive.get(row["model"], {}).get(c) for c in predictive]
                for row in self.rows]
        return to_csv(Table(None, columns + predictive, rows))

    # -- files ---------------------------------------------------------------------------------
    def figures(self, folder: str | os.PathLike) -> dict[str, Path]:
        """Draw the report's figures into ``folder``: the most-changed pairs and the per-pair cosines."""
        folder = Path(folder)
        drawn: dict[str, Path] = {}
        examples = self.examples
        if examples.get("images") is not None and len(examples["images"]):
            maps = {**examples["maps"], "mask": examples["masks"].float()}
            drawn["The pairs whose maps changed most: image, teacher, each student, mask"] = plot_attribution_grid(
                examples["images"], maps, folder / "changed_pairs.png", row_titles=examples["titles"])
        cosines = {row["model"]: self.pairs[(row["model"], row["method"])].column("cos")
                   for row in self.comparisons if row["method"] == self.settings.get("primary")}
        if cosines:
            method = ATTRIBUTION_TITLES.get(self.settings.get("primary"), self.settings.get("primary"))
            drawn["Per-pair cosine to the teacher's maps"] = plot_histograms(
                cosines, folder / "cosine_histogram.png", xlabel=f"cosine of each pair's {method} map to the teacher's")
        return drawn

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``report.md``, ``report.csv``, ``report.json`` and ``report.html`` (atomically) under ``out_dir``,
        and the figures under ``out_dir/figures``."""
        out = Path(out_dir)
        figures = self.figures(out / "figures")
        links = {title: str(path.relative_to(out)) for title, path in figures.items()}
        return {
            "markdown": atomic_write_text(out / "report.md", self.to_markdown(figures=links)),
            "csv": atomic_write_text(out / "report.csv", self.to_csv()),
            "json": atomic_write_json(out / "report.json", self.to_dict()),
            "html": atomic_write(out / "report.html", lambda h: h.write(render_html(self, figures))),
        }


def _pessimistic(gate: Gate, interval: Mapping[str, float]) -> tuple[float, bool]:
    """The interval's worst value for the gate, and whether it passes."""
    low, high = interval.get("low"), interval.get("high")
    if is_missing(low):  # no interval (too few pairs): judge the estimate itself
        low = high = interval.get("estimate")
    if is_missing(low):
        return math.nan, False
    if gate.name == "cos":
        return low, low >= gate.value
    if gate.name == "l2":
        return high, high <= gate.value
    worst_drop = -low  # a difference (student minus teacher): its lower bound is the largest drop
    return worst_drop, worst_drop <= gate.value


def _predictive_columns(predictive: Mapping[str, Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for values in predictive.values():
        columns += [c for c in values if c not in columns]
    return columns
