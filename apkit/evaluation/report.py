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

import torch

from apkit.core.errors import ValidationError
from apkit.core.io import atomic_write, atomic_write_json, atomic_write_set, atomic_write_text
from apkit.core.names import ATTRIBUTION_TITLES, GATE_NAMES
from apkit.core.validation import parse_overrides
from apkit.evaluation.html import render_html
from apkit.evaluation.pairs import PairTable
from apkit.evaluation.tables import Interval, Table, format_cell, is_missing, to_csv, to_markdown
from apkit.viz import plot_attribution_grid, plot_faithfulness_curves, plot_histograms

__all__ = ["ATTRIBUTION_COLUMNS", "AuditReport", "Gate", "gate_source", "parse_gates"]

ATTRIBUTION_COLUMNS = ("auc", "pointing", "cos", "l2")
ATTRIBUTION_HEADINGS = ("AUC", "Point Acc", "Cos", "L2")  # the tables' names of ATTRIBUTION_COLUMNS
# Gates on attribution differences read these comparisons; the predictive ones these metrics.
_GATE_SOURCES = {"cos": "cos", "l2": "l2", "auc_drop": "auc", "pointing_drop": "pointing", "map_drop": "map_image",
                 "map_class_drop": "map_class", "f1_drop": "f1", "top1_drop": "top1", "top5_drop": "top5",
                 "agreement": "agreement", "deletion_rise": "deletion", "insertion_drop": "insertion",
                 "road_drop": "road"}
_PREDICTIVE_GATES = ("map_drop", "map_class_drop", "f1_drop", "top1_drop", "top5_drop", "agreement")
# Gates that ask for at least VALUE (on the interval's low end) and at most VALUE (on its high end);
# every other gate bounds a drop against the teacher (student minus teacher, on its low end).
_AT_LEAST, _AT_MOST = ("cos", "agreement"), ("l2", "deletion_rise")
#: The faithfulness columns of the comparisons (student minus teacher, per image).
FAITHFULNESS_COLUMNS = ("deletion", "insertion", "road")


def gate_source(name: str) -> str:
    """The measured value a gate reads, e.g. ``"top1"`` for ``top1_drop``.

    Examples
    --------
    >>> gate_source("deletion_rise"), gate_source("agreement")
    ('deletion', 'agreement')
    """
    return _GATE_SOURCES[name]


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
        Figure material, not written to JSON: per method, images, masks and maps of the most-changed pairs.
    faithfulness : dict
        ``{(model, method): {metric: Tensor (N,)}}``: per image, in dataset order, ``deletion``,
        ``insertion``, ``road`` (mean LeRF minus MoRF probability), ``road_morf``, ``road_lerf``.
    curves : dict
        ``{(model, method): {"deletion" | "insertion": Tensor (steps + 1,)}}``: the mean curves.
    explained : Tensor or None
        ``(N,)`` the class each image's faithfulness explains (the teacher's top-1).
    image_names, class_names : list of str, optional
        The dataset's file names (index = image) and class names (index = class), shown in place
        of indices where present.
    warnings : list of str
        What the audit warned about (e.g. a map smaller than 4x4).
    verdict : list of dict
        One row per judged (gate, student[, method]): ``gate``, ``model``, ``value`` (the
        pessimistic end judged), ``interval`` and ``passed`` (:meth:`judge`).
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
    faithfulness: dict[tuple[str, str], dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    curves: dict[tuple[str, str], dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    explained: torch.Tensor | None = field(default=None, repr=False)
    image_names: list[str] | None = None
    class_names: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    verdict: list[dict[str, Any]] = field(default_factory=list)
    quantized: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        self.pairs = {key: PairTable.from_dict(table) for key, table in self.pairs.items()}

    def image_name(self, index: int) -> str:
        """The file name of image ``index`` where the dataset has one, else ``"image <index>"``."""
        names = self.image_names
        return names[index] if names and 0 <= index < len(names) else f"image {index}"

    def class_name(self, index: int) -> str:
        """The name of class ``index`` where the dataset has one, else its index."""
        names = self.class_names
        return names[index] if names and 0 <= index < len(names) else str(index)

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
        if self.faithfulness:
            data["faithfulness"] = [
                {"model": m, "method": k, "class": None if self.explained is None else self.explained.tolist(),
                 **{name: [None if math.isnan(v) else v for v in values.tolist()] for name, values in found.items()},
                 "curves": {kind: curve.tolist() for kind, curve in self.curves.get((m, k), {}).items()}}
                for (m, k), found in self.faithfulness.items()]
        data.update(image_names=self.image_names, class_names=self.class_names, warnings=self.warnings,
                    verdict=self.verdict)
        if self.quantized:
            data["quantized"] = self.quantized
        return data

    # -- gates ---------------------------------------------------------------------------------
    def gate(self, gates: Iterable[Gate | str]) -> list[str]:
        """The failed gates, one line each (an empty list: every gate passes).

        Each gate is judged on its interval's pessimistic end: ``cos`` and ``agreement`` on the
        lower bound (at least the value), ``l2`` and ``deletion_rise`` (student minus teacher) on
        the upper bound (at most the value), a ``*_drop`` on the largest drop against the teacher
        the interval allows (at most the value), for every student (and method).
        """
        return [row["line"] for row in self._judged(gates) if not row["passed"]]

    def judge(self, gates: Iterable[Gate | str]) -> list[str]:
        """Judge the gates like :meth:`gate`, keep every result in ``verdict`` (shown at the top of
        report.html), and return the failed ones, one line each."""
        self.verdict = self._judged(gates)
        return self.failures()

    def failures(self) -> list[str]:
        """The lines of the failed gates of ``verdict``."""
        return [row["line"] for row in self.verdict if not row["passed"]]

    def _judged(self, gates: Iterable[Gate | str]) -> list[dict[str, Any]]:
        gates = [g if isinstance(g, Gate) else parse_gates([g])[0] for g in gates]
        rows = []
        for gate in gates:
            for who, interval in self._gate_intervals(gate):
                worst, ok = _pessimistic(gate, interval)
                signed = gate.name.endswith(("_drop", "_rise"))
                shown = format_cell(Interval.from_dict(interval, signed=signed))
                kind = "drop " if gate.name.endswith("_drop") else "rise " if gate.name.endswith("_rise") else ""
                line = (f"gate {gate} {'passed' if ok else 'failed'} for {who}: {_GATE_SOURCES[gate.name]} {shown}, "
                        f"pessimistic {kind}{worst:.4f}")
                rows.append({"gate": str(gate), "who": who, "value": worst, "interval": shown, "passed": bool(ok),
                             "line": line})
        return rows

    def _gate_intervals(self, gate: Gate):
        source = _GATE_SOURCES[gate.name]
        if gate.name in _PREDICTIVE_GATES:
            found = [(f"student {s}", metrics[source]) for s, metrics in self.predictive_comparisons.items()
                     if source in metrics]
        else:
            found = [(f"student {row['model']}, {row['method']}", row[source]) for row in self.comparisons
                     if source in row]
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
                   for row in self.rows],
                  note="AUC and Point Acc on the pairs with a mask; Cos and L2 against the teacher's maps."),
        ]
        faithful = [c for c in FAITHFULNESS_COLUMNS if any(c in row for row in self.rows)]
        if faithful:
            tables.append(Table(
                "Faithfulness (mean over images, on the teacher's top-1 class)", ["model", "method", *faithful],
                [[row["model"], row["method"], *[row.get(c) for c in faithful]] for row in self.rows],
                note="deletion: area under the probability curve as the map's top pixels are removed (lower is more "
                     "faithful); insertion: as they are inserted into a blurred image (higher); road: mean over the "
                     "removed fractions of the LeRF minus the MoRF probability under ROAD's imputation (higher)."))
        tables += self._comparison_tables() + self._predictive_comparison_tables() + self._quantized_tables()
        if self.per_class:
            tables.append(Table("Per class", ["model", "method", "class", "pairs kept", "AUC", "Point Acc", "Cos"],
                                [[r["model"], r["method"], r["class"], r["kept"], r["auc"], r["pointing"], r["cos"]]
                                 for r in self.per_class]))
        if self.changed:
            tables.append(Table("The pairs whose maps changed most (lowest cosine to the teacher's)",
                                ["student", "method", "image", "class", "Cos", "AUC"],
                                [[r["model"], r["method"], self.image_name(r["image"]), self.class_name(r["class"]),
                                  r["cos"], r["auc"]] for r in self.changed]))
        return tables

    def _comparison_tables(self) -> list[Table]:
        if not self.comparisons:
            return []
        level = f"{100 * self.settings.get('confidence', 0.95):g} %"
        scores = [k for k in self.comparisons[0] if k.startswith("pointing") or k == "auc"]
        scores += [k for k in FAITHFULNESS_COLUMNS if k in self.comparisons[0]]
        tables = [Table(
            f"Each student against the teacher ({level} intervals, paired bootstrap over images, "
            f"{self.settings.get('resamples')} resamples)",
            ["student", "method", *[f"Δ {k}" for k in scores], "Cos", "L2", "common pairs"],
            [[row["model"], row["method"], *[Interval.from_dict(row.get(k), signed=True) for k in scores],
              Interval.from_dict(row["cos"]), Interval.from_dict(row["l2"]), row["common_pairs"]]
             for row in self.comparisons],
            note="Differences (student minus teacher): AUC and pointing on the (image, class) pairs both keep, "
                 "deletion, insertion and road on the teacher's top-1 class of every image; Cos and L2 compare "
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
        return [Table(None, ["student", *[n if n == "agreement" else f"Δ {n}" for n in names]],
                      [[student, *[Interval.from_dict(metrics.get(n), signed=n != "agreement") for n in names]]
                       for student, metrics in self.predictive_comparisons.items()],
                      note="agreement: the share of images on which the student's top-1 class is the teacher's.")]

    # -- text ----------------------------------------------------------------------------------
    def to_markdown(self, *, figures: Mapping[str, str] | None = None) -> str:
        """The tables (and links to ``figures``, ``{title: relative path}``) as Markdown."""
        blocks = [to_markdown(table) for table in self.tables()]
        if self.verdict:  # the gates first, as at the top of report.html
            lines = [f"- {'passed' if row['passed'] else '**failed**'}: {row['line']}" for row in self.verdict]
            blocks.insert(0, "## Verdict\n\n" + "\n".join(lines))
        if self.warnings:
            blocks.insert(0, "\n".join(f"> warning: {line}" for line in self.warnings))
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
        for method, examples in self._examples_by_method().items():
            if examples.get("images") is None or not len(examples["images"]):
                continue
            maps = dict(examples["maps"])
            if bool(examples["masks"].any()):
                maps["mask"] = examples["masks"].float()
            title = ATTRIBUTION_TITLES.get(method, method)
            stem = "changed_pairs" if method == self.settings.get("primary") else f"changed_pairs_{_file_part(method)}"
            drawn[f"{title}: the pairs whose maps changed most (rows: file: explained class; columns: image, "
                  f"teacher, each student{', mask' if 'mask' in maps else ''})"] = plot_attribution_grid(
                examples["images"], maps, folder / f"{stem}.png", row_titles=examples["titles"])
        if self.curves:
            panels = {}
            for (model, method), curves in self.curves.items():
                for kind, curve in curves.items():
                    panels.setdefault(f"{kind} ({ATTRIBUTION_TITLES.get(method, method)})", {})[model] = curve
            drawn["Deletion and insertion curves: mean probability of the teacher's top-1 class per model"] = \
                plot_faithfulness_curves(panels, folder / "faithfulness_curves.png")
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
        def write(stage: Path) -> dict[str, str]:
            figures = self.figures(stage / "figures")
            links = {title: str(path.relative_to(stage)) for title, path in figures.items()}
            atomic_write_text(stage / "report.md", self.to_markdown(figures=links))
            atomic_write_text(stage / "report.csv", self.to_csv())
            atomic_write_json(stage / "report.json", self.to_dict())
            atomic_write(stage / "report.html", lambda h: h.write(render_html(self, figures)))
            return {"markdown": "report.md", "csv": "report.csv", "json": "report.json", "html": "report.html",
                    **({"figures": "figures"} if figures else {})}

        # The four files and figures/ are swapped in together: a reader never sees two runs' files mixed.
        paths = atomic_write_set(out_dir, write, replaces=("figures",))  # an older report's figures go too
        paths.pop("figures", None)
        return paths


    def _examples_by_method(self) -> dict[str, dict[str, Any]]:
        """``examples`` per method (a single method's examples, as older reports hold, under the primary)."""
        if "images" in self.examples:
            return {self.settings.get("primary"): self.examples}
        return self.examples

    def headline(self, student: str) -> dict[str, Any]:
        """The student's main differences from the teacher (first method): predictive, agreement, similarity,
        faithfulness; each an interval dict."""
        found = dict(self.predictive_comparisons.get(student, {}))
        primary = self.settings.get("primary")
        for row in self.comparisons:
            if row["model"] == student and row["method"] == primary:
                found.update({k: row[k] for k in ("cos", "l2", "auc", *FAITHFULNESS_COLUMNS) if k in row})
        return found


def _file_part(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _pessimistic(gate: Gate, interval: Mapping[str, float]) -> tuple[float, bool]:
    """The interval's worst value for the gate, and whether it passes."""
    low, high = interval.get("low"), interval.get("high")
    if is_missing(low):  # no interval (too few pairs): judge the estimate itself
        low = high = interval.get("estimate")
    if is_missing(low):
        return math.nan, False
    if gate.name in _AT_LEAST:
        return low, low >= gate.value
    if gate.name in _AT_MOST:
        return high, high <= gate.value
    worst_drop = -low  # a difference (student minus teacher): its lower bound is the largest drop
    return worst_drop, worst_drop <= gate.value


def _predictive_columns(predictive: Mapping[str, Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for values in predictive.values():
        columns += [c for c in values if c not in columns]
    return columns
