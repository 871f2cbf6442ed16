"""Audit compressed models against their original: the one API that the command line and the benchmark use.

For the teacher and every student, and every attribution method, an audit measures

* predictive performance (per-image "mAP" as in the paper, per-class mAP, F1; top-1 for single-label data);
* attribution quality against ground-truth masks (ROC-AUC, pointing game);
* attribution similarity to the teacher's maps on the same (image, class) pairs (cosine, normalised L2);

and, for every student, the paired difference of each of these against the teacher with a 95 %
interval from a seeded paired bootstrap over images, the per-class breakdown and the pairs whose
maps changed most (:class:`~apkit.evaluation.report.AuditReport`).  The teacher's predictions and
maps are computed once and shared by every student (:class:`~apkit.evaluation.maps.MapCache`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from apkit import attribution
from apkit.core.distributed import all_gather_rows
from apkit.core.errors import ValidationError
from apkit.core.names import PROTOCOL_NAMES
from apkit.core.validation import check_choice, check_int, check_module, resolve_device
from apkit.evaluation.comparison import compare_attribution, compare_predictions, most_changed, per_class
from apkit.evaluation.localization import localization_scores
from apkit.evaluation.maps import MapCache
from apkit.evaluation.report import AuditReport
from apkit.training import classification_metrics, predict, resolve_task

__all__ = ["AuditReport", "ModelAudit", "audit", "audit_model"]

TEACHER = "teacher"


def _named_students(students: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if isinstance(students, nn.Module):
        students = [students]
    if isinstance(students, Mapping):
        named = dict(students)
    else:
        named = {f"student{i}" if len(students) > 1 else "student": s for i, s in enumerate(students)}
    if not named:
        raise ValidationError("students is empty: pass at least one compressed model, e.g. {'pruned': model}")
    for name, model in named.items():
        check_module(model, f"student {name!r}")
        if name == TEACHER:
            raise ValidationError(f"a student may not be named {TEACHER!r}; rename it")
    return named


@dataclass
class ModelAudit:
    """What :func:`audit_model` measures of one model.

    Attributes
    ----------
    predictive : dict
        ``{metric: value}`` (see :func:`apkit.training.evaluate`).
    methods : dict
        ``{attribution method: {auc, pointing, pointing@t, cos, l2, kept, skipped, ...}}``.
    pairs : dict
        ``{attribution method: {column: list}}``, the per-(image, class) values behind ``methods``.
    logits, labels : Tensor or None
        The model's logits and the labels of the classification set (every process's share), for
        paired comparisons; not part of :meth:`to_dict`.
    """

    predictive: dict[str, float] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: dict[str, dict[str, list]] = field(default_factory=dict)
    logits: torch.Tensor | None = field(default=None, repr=False)
    labels: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data."""
        return {"predictive": self.predictive, "methods": self.methods, "pairs": self.pairs}


def _check_tolerances(tolerances) -> tuple[int, ...]:
    if isinstance(tolerances, (str, bytes)) or not isinstance(tolerances, Sequence) or not tolerances:
        raise ValidationError("tolerances must list at least one pointing-game tolerance, e.g. (0,)")
    # Checked here, before any prediction, so that a bad tolerance costs nothing.
    return tuple(check_int(t, "tolerances", minimum=0) for t in tolerances)


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
    if not attribution_methods:
        raise ValidationError("attribution_methods is empty: name at least one, e.g. ['gradcam'] (apkit list)")
    scoring_set = dataset if classification_set is None else classification_set
    task = resolve_task(getattr(scoring_set, "task", None), scoring_set)
    logits, labels = predict(model, scoring_set, device=device, batch_size=batch_size, progress=progress)
    classes = getattr(scoring_set, "num_classes", None)
    if classes is not None and logits.shape[1] != classes:
        raise ValidationError(f"the model has {logits.shape[1]} outputs but the data has {classes} classes; "
                              "audit it on data of its own classes (or pass num_classes that match)")
    result = ModelAudit(predictive=classification_metrics(logits, labels, task=task),
                        logits=all_gather_rows(logits), labels=all_gather_rows(labels))
    for method in attribution_methods:
        # One set of maps serves every tolerance.
        scores = localization_scores(model, dataset, method=method, teacher=teacher, protocol=protocol,
                                     tolerances=tolerances, batch_size=batch_size, device=device, cache=cache,
                                     teacher_cache=teacher_cache, progress=progress)
        result.methods[method] = {k: v for k, v in scores.summary().items() if not isinstance(v, (list, dict))}
        result.pairs[method] = scores.pair_values()
    return result


def _layers(model: nn.Module, methods: Sequence[str]) -> dict[str, str | None]:
    """The layer each method explains (``None``: the input)."""
    return {m: getattr(attribution.ATTRIBUTION_METHODS.get(m)(model), "layer", None) for m in methods}


def _examples(teacher, named, dataset, pairs, method, count, device) -> dict[str, Any]:
    """Images, masks and every model's maps of the pairs whose maps changed most, for the figures."""
    lowest: dict[tuple[int, int], float] = {}
    for name in named:
        for row in most_changed(pairs[(name, method)], count):
            key = (row["image"], row["class"])
            lowest[key] = min(lowest.get(key, 2.0), row["cos"])
    chosen = sorted(lowest, key=lowest.get)[:count]
    if not chosen:
        return {}
    items = [dataset[i] for i, _ in chosen]
    images = torch.stack([item[0] for item in items]).to(device)
    masks = torch.stack([item[2] for item in items])
    targets = torch.stack([torch.arange(len(chosen)), torch.tensor([c for _, c in chosen])], 1).to(device)
    maps = {name: attribution.explain(model, images, targets, method=method).cpu()
            for name, model in {TEACHER: teacher, **named}.items()}
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    shown = images.cpu()
    if mean is not None and std is not None:
        shown = (shown * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)).clamp(0, 1)
    names = getattr(dataset, "classes", None)
    titles = [f"{i}: {names[c] if names else c}" for i, c in chosen]
    objects = masks.long() == torch.tensor([c + 1 for _, c in chosen]).view(-1, 1, 1)
    return {"images": shown, "masks": objects, "maps": maps, "titles": titles, "pairs": chosen}


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
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    examples: int = 6,
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
        Attribution methods (``apkit list`` shows them); the first is the one of the figures.
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
    resamples, confidence, seed : int, float, int
        The paired bootstrap over images behind every interval of the comparisons.
    examples : int
        How many of the most-changed pairs the figures show.
    progress : bool
        Show progress bars.

    Returns
    -------
    AuditReport
    """
    check_module(teacher, "teacher")
    named = _named_students(students)
    if not attribution_methods:
        raise ValidationError("attribution_methods is empty: name at least one, e.g. ['gradcam'] (apkit list)")
    for method in attribution_methods:
        attribution.ATTRIBUTION_METHODS.get(method)
    check_choice(protocol, "protocol", PROTOCOL_NAMES)
    tolerances = _check_tolerances(tolerances)
    check_int(resamples, "resamples", minimum=1)
    check_int(examples, "examples", minimum=0)
    device = resolve_device(device)
    report = AuditReport(settings={
        "attribution_methods": list(attribution_methods), "primary": attribution_methods[0], "protocol": protocol,
        "tolerances": list(tolerances), "batch_size": batch_size, "device": str(device), "students": list(named),
        "resamples": resamples, "confidence": confidence, "seed": seed,
    })
    # The teacher's logits and maps are computed once and read by every student's comparison.
    teacher_cache = MapCache(teacher)
    results = {}
    for name, model in {TEACHER: teacher, **named}.items():
        is_teacher = name == TEACHER
        results[name] = audit_model(
            model, dataset, teacher=None if is_teacher else teacher, attribution_methods=attribution_methods,
            protocol=protocol, tolerances=tolerances, classification_set=classification_set, batch_size=batch_size,
            device=device, cache=teacher_cache if is_teacher else None,
            teacher_cache=None if is_teacher else teacher_cache, progress=progress,
        )
        report.predictive[name] = results[name].predictive
        report.layers[name] = _layers(model, attribution_methods)
        for method in attribution_methods:
            report.rows.append({"model": name, "method": method, **results[name].methods[method]})
            report.pairs[(name, method)] = results[name].pairs[method]
    _compare(report, results, named, dataset, classification_set, tolerances)
    report.examples = _examples(teacher, named, dataset, report.pairs, attribution_methods[0], examples, device)
    return report


def _compare(report: AuditReport, results: Mapping[str, ModelAudit], named, dataset, classification_set,
             tolerances) -> None:
    """Fill the report's comparisons of every student with the teacher."""
    settings = report.settings
    options = {"resamples": settings["resamples"], "confidence": settings["confidence"], "seed": settings["seed"]}
    scoring_set = dataset if classification_set is None else classification_set
    task = resolve_task(getattr(scoring_set, "task", None), scoring_set)
    teacher = results[TEACHER]
    classes = getattr(dataset, "classes", None)
    for method in settings["attribution_methods"]:
        report.per_class += [{"model": TEACHER, "method": method, **row}
                             for row in per_class(teacher.pairs[method], classes)]
    for name in named:
        mine = results[name]
        report.predictive_comparisons[name] = compare_predictions(
            mine.logits, teacher.logits, teacher.labels, task=task, **options)
        for method in settings["attribution_methods"]:
            comparison = compare_attribution(mine.pairs[method], teacher.pairs[method], tolerances=tolerances,
                                             **options)
            report.comparisons.append({"model": name, "method": method, **comparison})
            report.per_class += [{"model": name, "method": method, **row} for row in per_class(mine.pairs[method],
                                                                                               classes)]
            report.changed += [{"model": name, "method": method, **row} for row in most_changed(mine.pairs[method])]
