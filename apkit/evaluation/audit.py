"""Audit compressed models against their original: the one API that the command line and the benchmark use.

For the teacher and every student, and every attribution method, an audit measures

* predictive performance (per-image "mAP" as in the paper, per-class mAP, F1; top-1 for single-label data);
* attribution quality against ground-truth masks (ROC-AUC, pointing game);
* attribution similarity to the teacher's maps on the same (image, class) pairs (cosine, normalised L2);

and, for every student, the paired difference of each of these against the teacher with a 95 %
interval from a seeded paired bootstrap over images, the per-class breakdown and the pairs whose
maps changed most (:class:`~apkit.evaluation.report.AuditReport`).  The teacher's predictions and
maps are computed once and shared by every student (:class:`~apkit.evaluation.maps.MapCache`).

:func:`audit` measures each model with :func:`audit_model`, which the benchmark calls too (one model
per stage); both compare per-pair tables (:class:`~apkit.evaluation.pairs.PairTable`) with the
code of :mod:`apkit.evaluation.comparison`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from apkit import attribution
from apkit.core.distributed import all_gather_rows
from apkit.core.errors import ValidationError
from apkit.core.names import PROTOCOL_NAMES
from apkit.core.validation import check_choice, check_int, check_known, check_module, resolve_device
from apkit.evaluation.comparison import compare_attribution, compare_predictions, most_changed, per_class
from apkit.evaluation.localization import VOID, localization_scores
from apkit.evaluation.maps import MapCache
from apkit.evaluation.pairs import PairTable
from apkit.evaluation.report import AuditReport
from apkit.models.quantized import audit_quantized, checked_twin, is_quantized
from apkit.training import classification_metrics, predict, resolve_task
from apkit.viz import denormalize

__all__ = ["AuditReport", "AuditSettings", "ModelAudit", "audit", "audit_model", "object_masks"]

TEACHER = "teacher"
MASK_KINDS = ("class", "object")  # how a dataset's masks read: value k + 1 = class k, or any value = the object


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
        ``{attribution method: PairTable}``, the per-(image, class) values behind ``methods``.
    logits, labels : Tensor or None
        The model's logits and the labels of the classification set (every process's share), for
        paired comparisons; not part of :meth:`to_dict`.
    """

    predictive: dict[str, float] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: dict[str, PairTable] = field(default_factory=dict)
    logits: torch.Tensor | None = field(default=None, repr=False)
    labels: torch.Tensor | None = field(default=None, repr=False)

    def pair_lists(self) -> dict[str, dict[str, list]]:
        """``{method: {column: list}}``: the per-pair tables, JSON-ready."""
        return {method: table.to_dict() for method, table in self.pairs.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data."""
        return {"predictive": self.predictive, "methods": self.methods, "pairs": self.pair_lists()}


def _check_tolerances(tolerances) -> tuple[int, ...]:
    if isinstance(tolerances, (str, bytes)) or not isinstance(tolerances, Sequence) or not tolerances:
        raise ValidationError("tolerances must list at least one pointing-game tolerance, e.g. (0,)")
    # Checked here, before any prediction, so that a bad tolerance costs nothing.
    return tuple(check_int(t, "tolerances", minimum=0) for t in tolerances)


def _check_methods(methods: Sequence[str]) -> None:
    if not methods:
        raise ValidationError("attribution_methods is empty: name at least one, e.g. ['gradcam'] (apkit list)")


@dataclass(frozen=True)
class AuditSettings:
    """The options of an audit (see :func:`audit` for each)."""

    attribution_methods: Sequence[str] = ("gradcam",)
    protocol: str = "voc"
    tolerances: Sequence[int] = (0,)
    batch_size: int = 32
    device: str | torch.device | None = None
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    examples: int = 6
    progress: bool = True

    @classmethod
    def from_options(cls, settings: AuditSettings | None = None, **options: Any) -> AuditSettings:
        """``settings`` (default: the defaults) with the keyword ``options`` replaced; unknown names raise."""
        check_known(options, "audit option", [f.name for f in fields(cls)])
        return replace(settings if settings is not None else cls(), **options)

    @property
    def bootstrap(self) -> dict[str, Any]:
        """The options of every paired bootstrap: ``resamples``, ``confidence``, ``seed``."""
        return {"resamples": self.resamples, "confidence": self.confidence, "seed": self.seed}


def audit_model(
    model: nn.Module,
    dataset,
    *,
    teacher: nn.Module | None = None,
    classification_set=None,
    cache: MapCache | None = None,
    teacher_cache: MapCache | None = None,
    settings: AuditSettings | None = None,
    explained: nn.Module | None = None,
    **options: Any,
) -> ModelAudit:
    """Audit one model: its predictive metrics and, per attribution method, its attribution scores.

    ``explained`` is the model whose attribution maps are scored, when not ``model`` itself: an
    int8 model's fake-quant twin, while the predictive metrics are the int8 model's (an int8
    ``model`` without one is explained through its twin, checked on ``dataset``).

    Parameters are those of :func:`audit` (``settings`` or its fields as keywords: only
    ``attribution_methods``, ``protocol``, ``tolerances``, ``batch_size``, ``device`` and
    ``progress`` matter here); ``teacher=None`` skips the similarity columns.  ``cache`` and
    ``teacher_cache`` (:class:`~apkit.evaluation.maps.MapCache`) keep the model's and the
    teacher's logits and maps across calls (see :func:`localization_scores`).

    Returns
    -------
    ModelAudit
    """
    settings = AuditSettings.from_options(settings, **options)
    tolerances = _check_tolerances(settings.tolerances)
    _check_methods(settings.attribution_methods)
    scoring_set = dataset if classification_set is None else classification_set
    task = resolve_task(getattr(scoring_set, "task", None), scoring_set)
    if explained is None and is_quantized(model):
        explained, _ = checked_twin(model, dataset, device=resolve_device(settings.device),
                                    batch_size=settings.batch_size)
    logits, labels = predict(model, scoring_set, device=settings.device, batch_size=settings.batch_size,
                             progress=settings.progress)
    classes = getattr(scoring_set, "num_classes", None)
    if classes is not None and logits.shape[1] != classes:
        raise ValidationError(f"the model has {logits.shape[1]} outputs but the data has {classes} classes; "
                              "audit it on data of its own classes (or pass num_classes that match)")
    result = ModelAudit(predictive=classification_metrics(logits, labels, task=task),
                        logits=all_gather_rows(logits), labels=all_gather_rows(labels))
    for method in settings.attribution_methods:
        # One set of maps serves every tolerance.
        scores = localization_scores(model if explained is None else explained, dataset, teacher=teacher,
                                     cache=cache, teacher_cache=teacher_cache,
                                     method=method, protocol=settings.protocol, tolerances=tolerances,
                                     batch_size=settings.batch_size, device=settings.device,
                                     progress=settings.progress)
        result.methods[method] = {k: v for k, v in scores.summary().items() if not isinstance(v, (list, dict))}
        result.pairs[method] = scores.pairs
    return result


def _layers(model: nn.Module, methods: Sequence[str]) -> dict[str, str | None]:
    """The layer each method explains (``None``: the input)."""
    return {m: getattr(attribution.ATTRIBUTION_METHODS.get(m)(model), "layer", None) for m in methods}


def _most_changed_pairs(pairs: Mapping[tuple[str, str], PairTable], students: Sequence[str], method: str,
                        count: int) -> list[tuple[int, int]]:
    """The ``count`` (image, class) pairs with the lowest cosine to the teacher's map over all students."""
    lowest: dict[tuple[int, int], float] = {}
    for name in students:
        for row in most_changed(pairs[(name, method)], count):
            key = (row["image"], row["class"])
            lowest[key] = min(lowest.get(key, 2.0), row["cos"])
    return sorted(lowest, key=lowest.get)[:count]


def object_masks(masks: torch.Tensor, classes: torch.Tensor, mask_kind: str = "class") -> torch.Tensor:
    """The pixels of each pair's object, as the dataset's ``mask_kind`` says to read its masks.

    ``"class"``: value ``k + 1`` marks class ``k``; ``"object"``: any value but 0 (background) and
    255 (void) marks the object, whatever its class (ImageNet's masks).

    Examples
    --------
    >>> masks = torch.tensor([[[0, 1], [3, 255]]])
    >>> object_masks(masks, torch.tensor([2])).int().tolist()
    [[[0, 0], [1, 0]]]
    >>> object_masks(masks, torch.tensor([2]), "object").int().tolist()
    [[[0, 1], [1, 0]]]
    """
    check_choice(mask_kind, "mask_kind", MASK_KINDS)
    if mask_kind == "object":
        return (masks > 0) & (masks != VOID)
    return masks.long() == (classes.long() + 1).view(-1, 1, 1)


def _examples(teacher: nn.Module, named: Mapping[str, nn.Module], dataset, *,
              pairs: Mapping[tuple[str, str], PairTable], method: str, count: int, device) -> dict[str, Any]:
    """Images, masks and every model's maps of the pairs whose maps changed most, for the figures."""
    chosen = _most_changed_pairs(pairs, list(named), method, count)
    if not chosen:
        return {}
    items = [dataset[i] for i, _ in chosen]
    images = torch.stack([item[0] for item in items]).to(device)
    classes = torch.tensor([c for _, c in chosen])
    targets = torch.stack([torch.arange(len(chosen)), classes], 1).to(device)
    maps = {name: attribution.explain(model, images, targets, method=method).cpu()
            for name, model in {TEACHER: teacher, **named}.items()}
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    shown = images.cpu() if mean is None or std is None else denormalize(images.cpu(), mean, std)
    names = getattr(dataset, "classes", None)
    titles = [f"{i}: {names[c] if names else c}" for i, c in chosen]
    objects = object_masks(torch.stack([item[2] for item in items]), classes, getattr(dataset, "mask_kind", "class"))
    return {"images": shown, "masks": objects, "maps": maps, "titles": titles, "pairs": chosen}


def _check_audit(settings: AuditSettings) -> AuditSettings:
    """The settings checked before any model runs, with the tolerances as a tuple of ints."""
    _check_methods(settings.attribution_methods)
    for method in settings.attribution_methods:
        attribution.ATTRIBUTION_METHODS.get(method)
    check_choice(settings.protocol, "protocol", PROTOCOL_NAMES)
    tolerances = _check_tolerances(settings.tolerances)
    check_int(settings.resamples, "resamples", minimum=1)
    check_int(settings.examples, "examples", minimum=0)
    return replace(settings, tolerances=tolerances, device=resolve_device(settings.device))


def audit(
    teacher: nn.Module,
    students: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module],
    dataset,
    *,
    classification_set=None,
    settings: AuditSettings | None = None,
    **options: Any,
) -> AuditReport:
    """Compare compressed models with their original on predictions and attribution maps.

    Parameters
    ----------
    teacher : torch.nn.Module
        The original (uncompressed) model.
    students : module, sequence of modules, or mapping name -> module
        The compressed models.
    dataset : torch.utils.data.Dataset
        A segmentation dataset whose items are ``(image, label, mask)``; its ``mask_kind``
        (``"class"``, the default, or ``"object"``) says how the figures read its masks.
    classification_set : Dataset, optional
        Where to measure predictive metrics; default ``dataset``.
    settings : AuditSettings, optional
        The options below as one value; keyword ``options`` override its fields.
    **options
        The fields of :class:`AuditSettings`:

        attribution_methods : sequence of str
            Attribution methods (``apkit list`` shows them); the first is the one of the figures.
        protocol : {"voc", "imagenet"}
            ``"voc"``: maps for every ground-truth class the model predicts correctly;
            ``"imagenet"``: the model's top-1 class for every image.
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
    settings = AuditSettings.from_options(settings, **options)
    check_module(teacher, "teacher")
    named = _named_students(students)
    settings = _check_audit(settings)
    methods = list(settings.attribution_methods)
    report = AuditReport(settings={
        "attribution_methods": methods, "primary": methods[0], "protocol": settings.protocol,
        "tolerances": list(settings.tolerances), "batch_size": settings.batch_size, "device": str(settings.device),
        "students": list(named), "resamples": settings.resamples, "confidence": settings.confidence,
        "seed": settings.seed,
    })
    # The teacher's logits and maps are computed once and read by every student's comparison.
    teacher_cache = MapCache(teacher)
    # An int8 student is explained through its fake-quant twin, checked first against its int8 logits.
    twins = {name: audit_quantized(model, teacher, dataset, name=f"student {name!r}", device=settings.device,
                                   batch_size=settings.batch_size) for name, model in named.items()
             if is_quantized(model)}
    report.quantized = {name: entry for name, (_, entry) in twins.items()}
    explained = {name: twin for name, (twin, _) in twins.items()}
    results = {}
    for name, model in {TEACHER: teacher, **named}.items():
        is_teacher = name == TEACHER
        results[name] = audit_model(
            model, dataset, teacher=None if is_teacher else teacher, classification_set=classification_set,
            cache=teacher_cache if is_teacher else None, teacher_cache=None if is_teacher else teacher_cache,
            settings=settings, explained=explained.get(name),
        )
        report.predictive[name] = results[name].predictive
        report.layers[name] = _layers(explained.get(name, model), methods)
        for method in methods:
            report.rows.append({"model": name, "method": method, **results[name].methods[method]})
            report.pairs[(name, method)] = results[name].pairs[method]
    scoring_set = dataset if classification_set is None else classification_set
    _compare(report, results, named, settings, task=resolve_task(getattr(scoring_set, "task", None), scoring_set),
             classes=getattr(dataset, "classes", None))
    report.examples = _examples(teacher, {**named, **explained}, dataset, pairs=report.pairs, method=methods[0],
                                count=settings.examples, device=settings.device)
    return report


def _compare(report: AuditReport, results: Mapping[str, ModelAudit], named, settings: AuditSettings, *, task: str,
             classes) -> None:
    """Fill the report's comparisons of every student with the teacher."""
    teacher = results[TEACHER]
    methods = settings.attribution_methods
    for method in methods:
        report.per_class += [{"model": TEACHER, "method": method, **row}
                             for row in per_class(teacher.pairs[method], classes)]
    for name in named:
        mine = results[name]
        report.predictive_comparisons[name] = compare_predictions(
            mine.logits, teacher.logits, teacher.labels, task=task, **settings.bootstrap)
        for method in methods:
            comparison = compare_attribution(mine.pairs[method], teacher.pairs[method],
                                             tolerances=settings.tolerances, **settings.bootstrap)
            report.comparisons.append({"model": name, "method": method, **comparison})
            report.per_class += [{"model": name, "method": method, **row}
                                 for row in per_class(mine.pairs[method], classes)]
            report.changed += [{"model": name, "method": method, **row} for row in most_changed(mine.pairs[method])]
