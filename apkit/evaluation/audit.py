"""Audit compressed models against their original: the one API that the command line and the benchmark use.

For the teacher and every student, and every attribution method, an audit measures

* predictive performance (per-image "mAP" as in the paper, per-class mAP, F1; top-1 and top-5 for
  single-label data, and each student's top-1 agreement with the teacher);
* attribution quality against ground-truth masks (ROC-AUC, pointing game), on the images that have one;
* attribution similarity to the teacher's maps on the same (image, class) pairs (cosine, normalised L2);
* faithfulness without masks (deletion, insertion, ROAD; :mod:`apkit.evaluation.audit_faithfulness`)
  on the teacher's top-1 class of every image;

and, for every student, the paired difference of each of these against the teacher with a 95 %
interval from a seeded paired bootstrap over images, the per-class breakdown and the pairs whose
maps changed most (:class:`~apkit.evaluation.report.AuditReport`).  The teacher's predictions and
maps are computed once and shared by every student (:class:`~apkit.evaluation.maps.MapCache`).

Which (image, class) pairs are explained (``protocol``): for single-label data the teacher's top-1
class of every image (``"teacher"``), so every model is explained on the same pairs and an image
without a mask is still compared; for multi-label data every ground-truth class the model predicts
(``"voc"``).  A dataset of plain ``(image, label)`` items (e.g. torchvision's ``ImageFolder``) is
audited without masks; its task is read from its labels (an integer label means single-label).

:func:`audit` measures each model with :func:`audit_model`, which the benchmark calls too (one model
per stage); both compare per-pair tables (:class:`~apkit.evaluation.pairs.PairTable`) with the
code of :mod:`apkit.evaluation.comparison`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from apkit import attribution
from apkit.core.distributed import all_gather_rows
from apkit.core.errors import DataError, ValidationError
from apkit.core.modules import evaluating
from apkit.core.names import GATE_NAMES, PROTOCOL_NAMES, TASK_NAMES
from apkit.core.validation import check_choice, check_int, check_known, check_module, resolve_device
from apkit.evaluation.audit_faithfulness import (
    FAITHFULNESS_NAMES,
    FaithfulnessResult,
    FaithfulnessSettings,
    faithfulness_scores,
)
from apkit.evaluation.comparison import (
    compare_attribution,
    compare_faithfulness,
    compare_predictions,
    most_changed,
    per_class,
)
from apkit.evaluation.localization import VOID, localization_scores
from apkit.evaluation.maps import MapCache
from apkit.evaluation.pairs import PairTable
from apkit.evaluation.report import AuditReport, Gate, gate_source, parse_gates
from apkit.metrics.classification import topk_accuracy
from apkit.models.quantized import audit_quantized, checked_twin, is_quantized
from apkit.training import classification_metrics, predict
from apkit.viz import denormalize

__all__ = ["AuditReport", "AuditSettings", "ModelAudit", "audit", "audit_model", "image_names", "object_masks",
           "task_of"]

TEACHER = "teacher"
MASK_KINDS = ("class", "object")  # how a dataset's masks read: value k + 1 = class k, or any value = the object
#: Layer maps smaller than this on a side are too coarse to compare well (a warning says so).
MIN_MAP_SIDE = 4
# The default protocol per task: the teacher's top-1 for single-label data, the paper's VOC rule otherwise.
DEFAULT_PROTOCOL = {"multiclass": "teacher", "multilabel": "voc"}


def task_of(dataset) -> str:
    """The dataset's ``task``, else the task its first label shows: an integer label is single-label.

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> task_of(TensorDataset(torch.zeros(2, 3), torch.tensor([0, 2])))
    'multiclass'
    >>> task_of(TensorDataset(torch.zeros(2, 3), torch.eye(2, 3)))
    'multilabel'
    """
    task = getattr(dataset, "task", None)
    if task is None:
        label = dataset[0][1] if len(dataset) else None
        if isinstance(label, torch.Tensor):
            integer = label.dim() == 0 and not label.is_floating_point() and label.dtype != torch.bool
        else:
            integer = isinstance(label, int) and not isinstance(label, bool)
        task = "multiclass" if integer else "multilabel"
    return check_choice(task, "task", TASK_NAMES)


def _may_have_masks(dataset) -> bool:
    """Whether any image of ``dataset`` can have a mask (``has_mask`` where the dataset says, else its items)."""
    has_mask = getattr(dataset, "has_mask", None)
    if has_mask is not None:
        return bool(any(has_mask))
    return len(dataset) > 0 and len(dataset[0]) >= 3


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
    faithfulness : dict
        ``{attribution method: {metric: Tensor (N,)}}``: per image of the dataset (in dataset order,
        float64 on the CPU), ``deletion``, ``insertion``, ``road`` (mean LeRF minus MoRF
        probability), ``road_morf`` and ``road_lerf``, on the class of ``explained``.
    curves : dict
        ``{attribution method: {"deletion" | "insertion": Tensor (steps + 1,)}}``: the mean curves.
    explained : Tensor or None
        ``(N,)`` the class each image's faithfulness explains (the teacher's top-1).
    """

    predictive: dict[str, float] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: dict[str, PairTable] = field(default_factory=dict)
    logits: torch.Tensor | None = field(default=None, repr=False)
    labels: torch.Tensor | None = field(default=None, repr=False)
    faithfulness: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    curves: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    explained: torch.Tensor | None = field(default=None, repr=False)

    def add_faithfulness(self, method: str, result: FaithfulnessResult) -> None:
        """Keep one method's per-image faithfulness and mean curves, and their means in ``methods``."""
        self.faithfulness[method] = dict(result.values)
        self.curves[method] = dict(result.curves)
        self.explained = result.classes
        self.methods.setdefault(method, {}).update(result.summary())

    def pair_lists(self) -> dict[str, dict[str, list]]:
        """``{method: {column: list}}``: the per-pair tables, JSON-ready."""
        return {method: table.to_dict() for method, table in self.pairs.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data."""
        return {"predictive": self.predictive, "methods": self.methods, "pairs": self.pair_lists(),
                "faithfulness": _lists(self.faithfulness), "curves": _lists(self.curves)}


def _lists(values: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, dict[str, list]]:
    return {method: {name: tensor.tolist() for name, tensor in found.items()} for method, found in values.items()}


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
    protocol: str | None = None
    tolerances: Sequence[int] = (0,)
    batch_size: int = 32
    device: str | torch.device | None = None
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    examples: int = 6
    progress: bool = True
    layers: Mapping[str, str] | None = None
    faithfulness: Sequence[str] = FAITHFULNESS_NAMES
    faithfulness_steps: int = 10
    road_percentages: Sequence[float] = (0.2, 0.4, 0.6, 0.8)
    gates: Sequence[Gate | str] = ()

    @classmethod
    def from_options(cls, settings: AuditSettings | None = None, **options: Any) -> AuditSettings:
        """``settings`` (default: the defaults) with the keyword ``options`` replaced; unknown names raise."""
        check_known(options, "audit option", [f.name for f in fields(cls)])
        return replace(settings if settings is not None else cls(), **options)

    @property
    def bootstrap(self) -> dict[str, Any]:
        """The options of every paired bootstrap: ``resamples``, ``confidence``, ``seed``."""
        return {"resamples": self.resamples, "confidence": self.confidence, "seed": self.seed}

    @property
    def faithfulness_settings(self) -> FaithfulnessSettings:
        """The faithfulness metrics and their steps, percentages and seed."""
        return FaithfulnessSettings(metrics=tuple(self.faithfulness), steps=self.faithfulness_steps,
                                    road_percentages=tuple(self.road_percentages), seed=self.seed)

    def layer_of(self, method: str) -> str | None:
        """The layer given for ``method`` (``None``: the method's default)."""
        return (self.layers or {}).get(method)

    def protocol_for(self, task: str) -> str:
        """The protocol given, else the task's default (the teacher's top-1 for single-label data)."""
        return self.protocol if self.protocol is not None else DEFAULT_PROTOCOL[task]


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
    """Audit one model: its predictive metrics and, per attribution method, its attribution scores
    and faithfulness.

    Parameters are those of :func:`audit` (``settings`` or its fields as keywords: the gates and
    ``examples`` do not matter here); ``teacher=None`` skips the similarity columns and explains
    the model's own top-1 class.  ``cache`` and ``teacher_cache``
    (:class:`~apkit.evaluation.maps.MapCache`) keep the model's and the teacher's logits and maps
    across calls (see :func:`localization_scores`); the faithfulness metrics read the maps the
    localization step put there.  ``faithfulness=()`` skips faithfulness (each metric costs
    ``faithfulness_steps + 1`` forward passes per image, ROAD one per percentage and order).

    ``explained`` is the model whose attribution maps are computed, when not ``model`` itself: an
    int8 model's fake-quant twin, while the predictive and faithfulness metrics are the int8
    model's (an int8 ``model`` without one is explained through its twin, checked on ``dataset``).

    Returns
    -------
    ModelAudit
    """
    settings = AuditSettings.from_options(settings, **options)
    tolerances = _check_tolerances(settings.tolerances)
    _check_methods(settings.attribution_methods)
    faithful = settings.faithfulness_settings.checked()
    scoring_set = dataset if classification_set is None else classification_set
    task = task_of(scoring_set)
    protocol = settings.protocol_for(task)
    if explained is None and is_quantized(model):
        explained, _ = checked_twin(model, dataset, device=resolve_device(settings.device),
                                    batch_size=settings.batch_size)
    shown = model if explained is None else explained  # the model whose maps are computed
    result = _predictive_audit(model, scoring_set, task=task, settings=settings)
    cache = cache if cache is not None else MapCache(shown, layer=dict(settings.layers or {}))
    if teacher is not None and teacher_cache is None:
        teacher_cache = MapCache(teacher, layer=dict(settings.layers or {}))
    for method in settings.attribution_methods:
        # One set of maps serves every tolerance, and the faithfulness metrics read them from the cache.
        scores = localization_scores(shown, dataset, teacher=teacher, cache=cache, teacher_cache=teacher_cache,
                                     method=method, protocol=protocol, tolerances=tolerances,
                                     similarity="all" if protocol == "teacher" else "kept",
                                     batch_size=settings.batch_size, device=settings.device,
                                     progress=settings.progress)
        result.methods[method] = {k: v for k, v in scores.summary().items() if not isinstance(v, (list, dict))}
        result.pairs[method] = scores.pairs
        if faithful.metrics:  # perturbations scored by the model itself (an int8 model, not its twin)
            result.add_faithfulness(method, faithfulness_scores(
                model, dataset, method=method, cache=cache, reference=teacher_cache, settings=faithful,
                task=task, batch_size=settings.batch_size, device=resolve_device(settings.device)))
    return result


def _predictive_audit(model: nn.Module, scoring_set, *, task: str, settings: AuditSettings) -> ModelAudit:
    """The model's predictive metrics (with top-5 for single-label data) and its gathered logits."""
    logits, labels = predict(model, scoring_set, device=settings.device, batch_size=settings.batch_size,
                             progress=settings.progress)
    classes = getattr(scoring_set, "num_classes", None)
    if classes is not None and logits.shape[1] != classes:
        raise ValidationError(f"the model has {logits.shape[1]} outputs but the data has {classes} classes; "
                              "audit it on data of its own classes (or pass num_classes that match)")
    if task == "multilabel" and labels.numel() and not labels.any() and _may_have_masks(scoring_set):
        # Masks that mark no object (all 0 or 255, say): nothing would be scored; stop before any map.
        raise DataError("no image of the data holds an object of its classes (every mask is 0 or 255, say): an audit "
                        "scores maps against labelled objects; check the masks, or pass the data whose masks mark them")
    predictive = classification_metrics(logits, labels, task=task)
    logits, labels = all_gather_rows(logits), all_gather_rows(labels)
    if task == "multiclass" and len(logits):
        predictive["top5"] = float(topk_accuracy(logits.double(), labels, 5).mean())
    return ModelAudit(predictive=predictive, logits=logits, labels=labels)


def _layers(model: nn.Module, methods: Sequence[str], given: Mapping[str, str] | None) -> dict[str, str | None]:
    """The layer each method explains (``None``: the input): the one given, else the method's default.

    Building the method checks a given name against the model's modules (the error lists them).
    """
    given = given or {}
    return {m: getattr(attribution.ATTRIBUTION_METHODS.get(m)(model, given.get(m)), "layer", None) for m in methods}


def _map_sizes(model: nn.Module, layers: Sequence[str], image: torch.Tensor, device) -> dict[str, tuple[int, int]]:
    """The ``(h, w)`` of each layer's output map for one image (one forward pass, no gradient)."""
    sizes: dict[str, tuple[int, int]] = {}
    modules = dict(model.named_modules())

    def keep(name):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                sizes.setdefault(name, (int(output.shape[-2]), int(output.shape[-1])))
        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in set(layers) if name in modules]
    try:
        with torch.no_grad(), evaluating(model, device=device):
            model(image[None].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def _coarse_map_warnings(models: Mapping[str, nn.Module], layers: Mapping[str, Mapping[str, str | None]], dataset,
                         device) -> list[str]:
    """One line per (model, method) whose layer's map is smaller than 4x4 at the data's input size, warned too."""
    if not len(dataset):
        return []
    image = dataset[0][0]
    lines = []
    for name, model in models.items():
        sizes = _map_sizes(model, [layer for layer in layers[name].values() if layer], image, device)
        for method, layer in layers[name].items():
            size = sizes.get(layer)
            if size is not None and min(size) < MIN_MAP_SIDE:
                lines.append(f"{name}: {method} explains layer {layer!r}, whose map is only {size[0]}x{size[1]} at "
                             f"{tuple(image.shape[-2:])} input; choose an earlier layer (--layer {method}=NAME) "
                             "for a finer map")
    for line in lines:
        warnings.warn(line, stacklevel=3)
    return lines


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


def image_names(dataset) -> list[str] | None:
    """The file name of each image (the dataset's ``sample_names``), or ``None`` where it has none."""
    names = getattr(dataset, "sample_names", None)
    if names is None:
        samples = getattr(dataset, "samples", None)  # torchvision's ImageFolder: (path, class) per image
        root = getattr(dataset, "root", None)
        names = None if samples is None else [
            os.path.relpath(path, root) if root is not None else str(path) for path, _ in samples]
    return [str(n) for n in names] if names is not None else None


def _displayable(images: torch.Tensor) -> torch.Tensor:
    """Images of unknown normalisation scaled to [0, 1] per image, for display only."""
    low = images.flatten(1).min(1).values.view(-1, 1, 1, 1)
    high = images.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return (images - low) / (high - low).clamp_min(1e-12)


def _item_masks(items: Sequence, images: torch.Tensor) -> torch.Tensor:
    """The items' masks, or all-void masks for items without one."""
    if all(len(item) >= 3 for item in items):
        return torch.stack([torch.as_tensor(item[2]) for item in items])
    return torch.full((len(items), *images.shape[-2:]), VOID, dtype=torch.uint8)


def _examples(teacher: nn.Module, named: Mapping[str, nn.Module], dataset, *,
              pairs: Mapping[tuple[str, str], PairTable], method: str, settings: AuditSettings,
              protocol: str | None = None) -> dict[str, Any]:
    """Images, masks and every model's maps of the pairs whose maps changed most, for one method's figure."""
    chosen = _most_changed_pairs(pairs, list(named), method, settings.examples)
    if not chosen:
        return {}
    device = settings.device
    items = [dataset[i] for i, _ in chosen]
    images = torch.stack([item[0] for item in items]).to(device)
    classes = torch.tensor([c for _, c in chosen])
    targets = torch.stack([torch.arange(len(chosen)), classes], 1).to(device)
    maps = {name: attribution.explain(model, images, targets, method=method, layer=settings.layer_of(method)).cpu()
            for name, model in {TEACHER: teacher, **named}.items()}
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    shown = _displayable(images.cpu()) if mean is None or std is None else denormalize(images.cpu(), mean, std)
    names, files = getattr(dataset, "classes", None), image_names(dataset)
    titles = [f"{files[i] if files else f'image {i}'}: {names[c] if names else f'class {c}'}" for i, c in chosen]
    # Under the teacher's protocol a mask marks the image's object, whichever class is explained.
    kind = "object" if protocol == "teacher" else getattr(dataset, "mask_kind", "class")
    objects = object_masks(_item_masks(items, images), classes, kind)
    return {"images": shown, "masks": objects, "maps": maps, "titles": titles, "pairs": chosen}


#: The predictive metrics each task measures, which the predictive gates read.
PREDICTIVE_SOURCES = {"multiclass": ("top1", "top5", "agreement"), "multilabel": ("map_image", "map_class", "f1")}


def _check_gates(settings: AuditSettings, dataset, task: str) -> list[Gate]:
    """The gates parsed, each refused before any work when this audit would not measure what it reads."""
    gates = [g if isinstance(g, Gate) else parse_gates([g])[0] for g in settings.gates]
    measured = {"cos", "l2", *PREDICTIVE_SOURCES[task], *settings.faithfulness}
    if _may_have_masks(dataset):
        measured |= {"auc", "pointing"}
    for gate in gates:
        source = gate_source(gate.name)
        if source not in measured:
            why = ("the data has no masks" if source in ("auc", "pointing") else
                   "faithfulness is not measured (see faithfulness=)" if source in FAITHFULNESS_NAMES else
                   f"the data is {'single' if task == 'multiclass' else 'multi'}-label")
            judged = [n for n in GATE_NAMES if gate_source(n) in measured]
            raise ValidationError(f"gate {gate} cannot be judged: this audit measures no {source} ({why}); "
                                  f"gates it can judge: {', '.join(judged)}")
    return gates


def _check_audit(settings: AuditSettings) -> AuditSettings:
    """The settings checked before any model runs, with the tolerances as a tuple of ints."""
    _check_methods(settings.attribution_methods)
    for method in settings.attribution_methods:
        attribution.ATTRIBUTION_METHODS.get(method)
    if settings.protocol is not None:
        check_choice(settings.protocol, "protocol", PROTOCOL_NAMES)
    tolerances = _check_tolerances(settings.tolerances)
    check_int(settings.resamples, "resamples", minimum=1)
    check_int(settings.examples, "examples", minimum=0)
    settings.faithfulness_settings.checked()
    if settings.layers is not None:
        if not isinstance(settings.layers, Mapping):
            raise ValidationError(f"layers must map methods to layer names, e.g. {{'gradcam': 'layer3'}}, "
                                  f"got {settings.layers!r}")
        check_known(settings.layers, "method of layers (not among attribution_methods)", settings.attribution_methods)
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
        Items ``(image, label)`` or ``(image, label, mask)``: any PyTorch or torchvision dataset
        (its task read from its labels, see :func:`task_of`).  Images with a mask (not all 255)
        are scored on localization, every image on everything else; ``mask_kind`` (``"class"``,
        the default, or ``"object"``) says how the figures read the masks.  ``classes`` (class
        names) and ``sample_names`` (file names), where the dataset has them, label the report.
    classification_set : Dataset, optional
        Where to measure predictive metrics; default ``dataset``.
    settings : AuditSettings, optional
        The options below as one value; keyword ``options`` override its fields.
    **options
        The fields of :class:`AuditSettings`:

        attribution_methods : sequence of str
            Attribution methods (``apkit list``); each gets its figure.
        protocol : {"teacher", "voc", "imagenet"}, optional
            ``"teacher"`` (default for single-label data): the teacher's top-1 class of every image,
            the same pairs for every model; ``"voc"`` (default for multi-label data): every
            ground-truth class the model predicts (logit > 0); ``"imagenet"``: each model's own
            top-1 class.
        tolerances : sequence of int
            Pointing-game tolerances in pixels (0 = the paper's strict pointing), scored on the same
            maps: the first is reported as ``pointing``, every other ``t`` as ``pointing@t``.
        batch_size : int
            Images per batch.
        device : str or torch.device, optional
            ``"cpu"``, ``"cuda"`` or ``None`` for CUDA when available.
        resamples, confidence, seed : int, float, int
            The paired bootstrap over images behind every interval of the comparisons (the seed
            also seeds ROAD's imputation noise).
        examples : int
            How many of the most-changed pairs each method's figure shows.
        progress : bool
            Show progress bars.
        layers : mapping, optional
            ``{method: layer name}`` for layer methods, the same for every model (default: each
            model's attribution layer).  Every layer used is in ``report.layers``; a map smaller
            than 4x4 at the data's input size is warned about.
        faithfulness : sequence of str
            Which of ``"deletion"``, ``"insertion"``, ``"road"`` to measure on the teacher's top-1
            class of every image (``()``: none); see :mod:`apkit.evaluation.audit_faithfulness`.
        faithfulness_steps : int
            Deletion and insertion steps (default 10).
        road_percentages : sequence of float
            Fractions of pixels ROAD removes (default 0.2, 0.4, 0.6, 0.8).
        gates : sequence of Gate or "NAME=VALUE"
            Release gates, checked before any model runs (a gate on something this audit does
            not measure is refused) and judged at the end into ``report.verdict``.

    Returns
    -------
    AuditReport
    """
    settings = AuditSettings.from_options(settings, **options)
    check_module(teacher, "teacher")
    named = _named_students(students)
    settings = _check_audit(settings)
    scoring_set = dataset if classification_set is None else classification_set
    task = task_of(scoring_set)
    gates = _check_gates(settings, dataset, task)
    models = {TEACHER: teacher, **named}
    methods = list(settings.attribution_methods)
    report = AuditReport(settings=_recorded(settings, list(named), task), image_names=image_names(dataset),
                         class_names=[str(c) for c in getattr(dataset, "classes", None) or []] or None)
    explained = _quantized_students(report, teacher, named, dataset, settings=settings)
    shown = {name: explained.get(name, model) for name, model in models.items()}  # whose maps are computed
    report.layers = {name: _layers(model, methods, settings.layers) for name, model in shown.items()}
    report.warnings += _coarse_map_warnings(shown, report.layers, dataset, settings.device)
    # The teacher's logits and maps are computed once and read by every student's comparison.
    teacher_cache = MapCache(teacher, layer=dict(settings.layers or {}))
    results = {}
    for name, model in models.items():
        is_teacher = name == TEACHER
        results[name] = audit_model(
            model, dataset, teacher=None if is_teacher else teacher, classification_set=classification_set,
            cache=teacher_cache if is_teacher else None, teacher_cache=None if is_teacher else teacher_cache,
            settings=settings, explained=explained.get(name),
        )
        _add_model(report, name, results[name], methods)
    _compare(report, results, named, settings, task=task, classes=getattr(dataset, "classes", None))
    report.examples = {method: _examples(teacher, {**named, **explained}, dataset, pairs=report.pairs, method=method,
                                         settings=settings, protocol=settings.protocol_for(task)) for method in methods}
    if gates:
        report.judge(gates)
    return report


def _quantized_students(report: AuditReport, teacher: nn.Module, named: Mapping[str, nn.Module], dataset, *,
                        settings: AuditSettings) -> dict[str, nn.Module]:
    """``{name: fake-quant twin}`` of every int8 student, each checked against its int8 logits first;
    their agreement, size and latency go into ``report.quantized``."""
    twins = {name: audit_quantized(model, teacher, dataset, name=f"student {name!r}", device=settings.device,
                                   batch_size=settings.batch_size) for name, model in named.items()
             if is_quantized(model)}
    report.quantized = {name: entry for name, (_, entry) in twins.items()}
    return {name: twin for name, (twin, _) in twins.items()}


def _recorded(settings: AuditSettings, students: list[str], task: str) -> dict[str, Any]:
    """The audit's options as the report keeps them."""
    methods = list(settings.attribution_methods)
    return {
        "attribution_methods": methods, "primary": methods[0], "protocol": settings.protocol_for(task), "task": task,
        "tolerances": list(settings.tolerances), "batch_size": settings.batch_size, "device": str(settings.device),
        "students": students, "resamples": settings.resamples, "confidence": settings.confidence,
        "seed": settings.seed, "layers": dict(settings.layers or {}), "faithfulness": list(settings.faithfulness),
        "faithfulness_steps": settings.faithfulness_steps, "road_percentages": list(settings.road_percentages),
    }


def _add_model(report: AuditReport, name: str, result: ModelAudit, methods: Sequence[str]) -> None:
    """One model's predictive metrics, rows, per-pair tables and faithfulness into the report."""
    report.predictive[name] = result.predictive
    for method in methods:
        report.rows.append({"model": name, "method": method, **result.methods[method]})
        report.pairs[(name, method)] = result.pairs[method]
        if method in result.faithfulness:
            report.faithfulness[(name, method)] = result.faithfulness[method]
            report.curves[(name, method)] = result.curves[method]
    if result.explained is not None:
        report.explained = result.explained


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
            if method in mine.faithfulness:
                images = torch.arange(len(next(iter(mine.faithfulness[method].values()))))
                comparison.update(compare_faithfulness(mine.faithfulness[method], teacher.faithfulness[method],
                                                       images, **settings.bootstrap))
            report.comparisons.append({"model": name, "method": method, **comparison})
            report.per_class += [{"model": name, "method": method, **row}
                                 for row in per_class(mine.pairs[method], classes)]
            report.changed += [{"model": name, "method": method, **row} for row in most_changed(mine.pairs[method])]
