"""Audit compressed models against their original: the one API that the command line and the benchmark use.

For the teacher and every student, and every attribution method, an audit measures

* predictive performance (per-image "mAP" as in the paper, per-class mAP, F1; top-1 for single-label data);
* attribution quality against ground-truth masks (ROC-AUC, pointing game);
* attribution similarity to the teacher's maps on the same (image, class) pairs (cosine, normalised L2).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from apkit import attribution
from apkit._compat import ItemAccess, renamed_keywords
from apkit._io import atomic_write_json, atomic_write_text
from apkit._validation import check_choice, check_module, resolve_device
from apkit.errors import ValidationError
from apkit.evaluation.localization import localization_scores
from apkit.evaluation.maps import MapCache
from apkit.names import PROTOCOL_NAMES
from apkit.training import evaluate

__all__ = ["AuditReport", "ModelAudit", "audit", "audit_model"]

TEACHER = "teacher"
ATTRIBUTION_COLUMNS = ("auc", "pointing", "cos", "l2")


@dataclass
class AuditReport:
    """Results of :func:`audit`.

    Attributes
    ----------
    predictive : dict
        ``{model name: {metric: value}}``.
    rows : list of dict
        One row per (model, method): ``auc``, ``pointing``, ``cos``, ``l2`` and the pair counts.
    pairs : dict
        ``{(model, method): {column: list}}`` — the per-(image, class) values behind each row.
    settings : dict
        The audit's options, for the record.
    """

    predictive: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    pairs: dict[tuple[str, str], dict[str, list]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def row(self, model: str, method: str) -> dict[str, Any]:
        """The row of ``model`` and ``method``."""
        for row in self.rows:
            if row["model"] == model and row["method"] == method:
                return row
        raise ValidationError(f"no row for model {model!r} and method {method!r} in this report")

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain JSON-ready data (per-pair values included)."""
        return {
            "settings": self.settings,
            "predictive": self.predictive,
            "rows": self.rows,
            "pairs": [{"model": m, "method": k, **values} for (m, k), values in self.pairs.items()],
        }

    def to_markdown(self) -> str:
        """Two tables: predictive metrics per model, attribution metrics per model and method."""
        lines = ["| model | " + " | ".join(_predictive_columns(self.predictive)) + " |"]
        lines.append("|---" * (1 + len(_predictive_columns(self.predictive))) + "|")
        for name, values in self.predictive.items():
            cells = [_fmt(values.get(c)) for c in _predictive_columns(self.predictive)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "| model | method | AUC | Point Acc | Cos | L2 | pairs kept |", "|---|---|---|---|---|---|---|"]
        for row in self.rows:
            cells = [_fmt(row[c]) for c in ATTRIBUTION_COLUMNS]
            lines.append(f"| {row['model']} | {row['method']} | " + " | ".join(cells) + f" | {row['kept']} |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The per-(model, method) rows as CSV, with the model's predictive metrics repeated on each row."""
        buffer = io.StringIO()
        columns = ["model", "method", *ATTRIBUTION_COLUMNS, "kept", "skipped"]
        predictive = _predictive_columns(self.predictive)
        writer = csv.writer(buffer)
        writer.writerow(columns + predictive)
        for row in self.rows:
            extra = self.predictive.get(row["model"], {})
            writer.writerow([row[c] for c in columns] + [extra.get(c) for c in predictive])
        return buffer.getvalue()

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``report.md``, ``report.csv`` and ``report.json`` (atomically) under ``out_dir``."""
        out = Path(out_dir)
        return {
            "markdown": atomic_write_text(out / "report.md", self.to_markdown()),
            "csv": atomic_write_text(out / "report.csv", self.to_csv()),
            "json": atomic_write_json(out / "report.json", self.to_dict()),
        }


def _predictive_columns(predictive: Mapping[str, Mapping[str, float]]) -> list[str]:
    columns: list[str] = []
    for values in predictive.values():
        columns += [c for c in values if c not in columns]
    return columns


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _named_students(students: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if isinstance(students, nn.Module):
        students = [students]
    if isinstance(students, Mapping):
        named = dict(students)
    else:
        named = {f"student{i}" if len(students) > 1 else "student": s for i, s in enumerate(students)}
    for name, model in named.items():
        check_module(model, f"student {name!r}")
        if name == TEACHER:
            raise ValidationError(f"a student may not be named {TEACHER!r}; rename it")
    return named


@dataclass
class ModelAudit(ItemAccess):
    """What :func:`audit_model` measures of one model.

    Attributes
    ----------
    predictive : dict
        ``{metric: value}`` (see :func:`apkit.training.evaluate`).
    methods : dict
        ``{attribution method: {auc, pointing, pointing@t, cos, l2, kept, skipped, ...}}``.
    pairs : dict
        ``{attribution method: {column: list}}``, the per-(image, class) values behind ``methods``.
    """

    predictive: dict[str, float] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: dict[str, dict[str, list]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data."""
        return {"predictive": self.predictive, "methods": self.methods, "pairs": self.pairs}


def _check_tolerances(tolerances) -> tuple[int, ...]:
    if isinstance(tolerances, (str, bytes)) or not isinstance(tolerances, Sequence) or not tolerances:
        raise ValidationError("tolerances must list at least one pointing-game tolerance, e.g. (0,)")
    return tuple(tolerances)


@renamed_keywords(methods="attribution_methods")
def audit_model(
    model: nn.Module,
    dataset,
    *,
    teacher: nn.Module | None = None,
    attribution_methods: Sequence[str] = ("gradcam",),
    protocol: str = "voc",
    tolerances: Sequence[int] = (0,),
    classification_set=None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    cache: MapCache | None = None,
    teacher_cache: MapCache | None = None,
    progress: bool = True,
) -> ModelAudit:
    """Audit one model: its predictive metrics and, per attribution method, its attribution scores.

    Parameters are those of :func:`audit`; ``teacher=None`` skips the similarity columns.
    ``cache`` and ``teacher_cache`` (:class:`~apkit.evaluation.maps.MapCache`) keep the model's and
    the teacher's logits and maps across calls (see :func:`localization_scores`).

    Returns
    -------
    ModelAudit
    """
    tolerances = _check_tolerances(tolerances)
    scoring_set = dataset if classification_set is None else classification_set
    result = ModelAudit(predictive=evaluate(model, scoring_set, task=getattr(scoring_set, "task", None),
                                            device=device, batch_size=batch_size, progress=progress))
    for method in attribution_methods:
        # One set of maps serves every tolerance.
        scores = localization_scores(model, dataset, method=method, teacher=teacher, protocol=protocol,
                                     tolerances=tolerances, batch_size=batch_size, device=device, cache=cache,
                                     teacher_cache=teacher_cache, progress=progress)
        result.methods[method] = {k: v for k, v in scores.summary().items() if not isinstance(v, (list, dict))}
        result.pairs[method] = scores.pair_values()
    return result


@renamed_keywords(methods="attribution_methods", tolerance=("tolerances", lambda t: (t,)))
def audit(
    teacher: nn.Module,
    students: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module],
    dataset,
    *,
    attribution_methods: Sequence[str] = ("gradcam",),
    protocol: str = "voc",
    classification_set=None,
    tolerances: Sequence[int] = (0,),
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> AuditReport:
    """Compare compressed models with their original on predictions and attribution maps.

    Parameters
    ----------
    teacher : torch.nn.Module
        The original (uncompressed) model.
    students : module, sequence of modules, or mapping name -> module
        The compressed models.
    dataset : torch.utils.data.Dataset
        A segmentation dataset whose items are ``(image, label, mask)``.
    attribution_methods : sequence of str
        Attribution methods (``apkit list`` shows them).
    protocol : {"voc", "imagenet"}
        ``"voc"``: maps for every ground-truth class the model predicts correctly;
        ``"imagenet"``: the model's top-1 class for every image.
    classification_set : Dataset, optional
        Where to measure predictive metrics; default ``dataset``.
    tolerances : sequence of int
        Pointing-game tolerances in pixels (0 = the paper's strict pointing), scored on the same
        maps: the first is reported as ``pointing``, every other ``t`` as ``pointing@t``.
    batch_size : int
        Images per batch.
    device : str or torch.device, optional
        ``"cpu"``, ``"cuda"`` or ``None`` for CUDA when available.
    progress : bool
        Show progress bars.

    Returns
    -------
    AuditReport
    """
    check_module(teacher, "teacher")
    named = _named_students(students)
    for method in attribution_methods:
        attribution.ATTRIBUTION_METHODS.get(method)
    check_choice(protocol, "protocol", PROTOCOL_NAMES)
    tolerances = _check_tolerances(tolerances)
    device = resolve_device(device)
    report = AuditReport(settings={
        "attribution_methods": list(attribution_methods), "protocol": protocol, "tolerances": list(tolerances),
        "batch_size": batch_size, "device": str(device), "students": list(named),
    })
    # The teacher's logits and maps are computed once and read by every student's comparison.
    teacher_cache = MapCache(teacher)
    for name, model in {TEACHER: teacher, **named}.items():
        is_teacher = name == TEACHER
        result = audit_model(
            model, dataset, teacher=None if is_teacher else teacher, attribution_methods=attribution_methods,
            protocol=protocol, tolerances=tolerances, classification_set=classification_set, batch_size=batch_size,
            device=device, cache=teacher_cache if is_teacher else None,
            teacher_cache=None if is_teacher else teacher_cache, progress=progress,
        )
        report.predictive[name] = result.predictive
        for method in attribution_methods:
            report.rows.append({"model": name, "method": method, **result.methods[method]})
            report.pairs[(name, method)] = result.pairs[method]
    return report
