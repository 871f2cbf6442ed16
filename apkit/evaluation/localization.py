"""The paper's localization protocol: attribution maps against segmentation masks over a dataset.

:func:`localization_scores` streams a segmentation dataset (items ``(image, label, mask)``, mask
0 = background, ``k + 1`` = class ``k``, 255 = void) through a model and, for every
(image, class) pair the protocol selects, computes the model's attribution map with
:func:`apkit.explain` and scores it.  Three steps, one function each:

1. **Pair selection** (:func:`select_pairs`), per protocol:

   * **"voc"** (METHOD §4.2): the ground-truth classes of an image are those with at least one
     pixel in its mask; a pair is kept when the model predicts its class (logit > 0), the others
     are skipped.  The class mask is ``mask == k + 1``.
   * **"imagenet"** (supplement B): the model's top-1 class for every image, scored against the
     object mask ``(mask > 0) & (mask != 255)``, since the masks' classes are not the model's.
   * **"teacher"** (the default for single-label data): the teacher's top-1 class for every
     image, so every model is explained on the same (image, class) pairs; an image is scored on
     localization where it has a mask (object ``(mask > 0) & (mask != 255)``), and every image is
     compared with the teacher's map (``similarity`` "kept" and "all" both mean every image here).
     Items ``(image, label)`` without a mask are read as all-void masks.

2. **Scoring** (:func:`score_maps`): ROC-AUC of the map, min-max normalised as the paper does
   (``(H - min) / (max - min + 1e-5)``), against the mask; the strict pointing game (or a pixel
   tolerance) on the raw map.  Void pixels (255) are left out of the AUC when a mask holds them;
   the paper's VOC loader maps them to background (negatives) instead, which apkit's VOC dataset
   does by default.  A map holding NaN or inf is skipped, as in the paper.  With a ``teacher``,
   the cosine similarity and normalised L2 distance between the model's and the teacher's maps
   are computed on the same pairs (METHOD §4.3 leaves the pairs open).  The default
   ``similarity="kept"`` uses the pairs kept for the model's AUC; ``"both"`` only the pairs that
   both models predict correctly (for "imagenet": where both have the same top-1 class); ``"all"``
   every candidate pair.

3. **Accumulation** (:class:`LocalizationTotals`): sums and counts that add up over batches and,
   under ``torchrun``, over processes; the per-pair values are kept for reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from apkit import attribution
from apkit.core.distributed import all_gather_rows, all_reduce_sum, local_device, world_info
from apkit.core.errors import DataError, ValidationError
from apkit.core.modules import evaluating
from apkit.core.names import PROTOCOL_NAMES, SIMILARITY_PAIR_NAMES
from apkit.core.validation import check_choice, check_dataset, check_int, check_known, check_module, resolve_device
from apkit.evaluation.maps import MapCache
from apkit.evaluation.pairs import PairTable
from apkit.metrics.localization import normalize_maps, pointing_game, roc_auc
from apkit.metrics.similarity import cosine_similarity, normalized_l2

__all__ = ["LocalizationResult", "LocalizationSettings", "LocalizationTotals", "PairSelection",
           "localization_scores", "score_maps", "select_pairs"]

VOID = 255
# Columns of the per-pair table; every tolerance after the first adds a column "hit@t".
PAIR_COLUMNS = ("image", "class", "correct", "teacher_correct", "kept", "auc", "hit", "cos", "l2")


# ------------------------------------------------------------------------------------------ totals


@dataclass
class LocalizationTotals:
    """Sums and counts of the protocol; they add up over batches (:meth:`merge`) and processes.

    Every field is a float64 tensor (the per-class ones of length ``num_classes``), so that one
    ``all_reduce`` sums them all (:meth:`all_reduce`).
    """

    candidates: torch.Tensor  # pairs the protocol considered (GT pairs, or one per image)
    kept: torch.Tensor  # pairs scored for AUC and pointing
    skipped_wrong: torch.Tensor  # "voc": ground-truth classes the model does not predict
    skipped_invalid: torch.Tensor  # maps with NaN/inf; "imagenet": images without object pixels
    auc_sum: torch.Tensor
    auc_count: torch.Tensor  # kept pairs with a defined AUC (a mask with both classes)
    hits: torch.Tensor
    cos_sum: torch.Tensor
    l2_sum: torch.Tensor
    similarity_count: torch.Tensor  # pairs with a defined similarity (no all-zero map)
    class_kept: torch.Tensor
    class_hits: torch.Tensor
    class_auc_sum: torch.Tensor
    class_auc_count: torch.Tensor
    extra_hits: torch.Tensor  # hits at each tolerance after the first, over the kept pairs

    @classmethod
    def zeros(cls, num_classes: int, device: torch.device | str = "cpu", *, tolerances: int = 1) -> LocalizationTotals:
        """Empty totals for ``num_classes`` classes and ``tolerances`` pointing tolerances."""
        values = {}
        for f in fields(cls):
            size = (num_classes,) if f.name.startswith("class_") else (
                (tolerances - 1,) if f.name.startswith("extra_") else ())
            values[f.name] = torch.zeros(size, dtype=torch.float64, device=device)
        return cls(**values)

    def _vector(self) -> torch.Tensor:
        return torch.cat([getattr(self, f.name).reshape(-1) for f in fields(self)])

    def _from_vector(self, vector: torch.Tensor) -> LocalizationTotals:
        values, offset = {}, 0
        for f in fields(self):
            current = getattr(self, f.name)
            values[f.name] = vector[offset:offset + current.numel()].reshape(current.shape)
            offset += current.numel()
        return type(self)(**values)

    def merge(self, other: LocalizationTotals) -> LocalizationTotals:
        """The totals of both parts (e.g. two batches, or two shards of a dataset)."""
        if (not isinstance(other, LocalizationTotals) or other.class_kept.shape != self.class_kept.shape
                or other.extra_hits.shape != self.extra_hits.shape):
            raise ValidationError("can only merge LocalizationTotals with the same classes and tolerances")
        return self._from_vector(self._vector() + other._vector().to(self.kept.device))

    def all_reduce(self) -> LocalizationTotals:
        """Sum over all processes under ``torch.distributed`` (a copy in a single process)."""
        return self._from_vector(all_reduce_sum(self._vector()))

    def add(self, classes: torch.Tensor, kept: torch.Tensor, *, auc: torch.Tensor, hits: torch.Tensor,
            cos: torch.Tensor, l2: torch.Tensor) -> None:
        """Add one batch's scored pairs (in place); ``hits`` has one column per tolerance."""
        hit = hits[:, 0]
        self.extra_hits += hits[kept, 1:].sum(0)
        has_auc = kept & ~torch.isnan(auc)
        self.kept += kept.sum()
        self.auc_sum += auc[has_auc].sum()
        self.auc_count += has_auc.sum()
        self.hits += hit[kept].sum()
        has_similarity = ~torch.isnan(cos) & ~torch.isnan(l2)
        self.cos_sum += cos[has_similarity].sum()
        self.l2_sum += l2[has_similarity].sum()
        self.similarity_count += has_similarity.sum()
        self.class_kept.index_add_(0, classes[kept], torch.ones_like(hit[kept]))
        self.class_hits.index_add_(0, classes[kept], hit[kept])
        self.class_auc_sum.index_add_(0, classes[has_auc], auc[has_auc])
        self.class_auc_count.index_add_(0, classes[has_auc], torch.ones_like(auc[has_auc]))

    def summary(self) -> dict[str, Any]:
        """Means and counts as plain numbers (NaN where nothing was counted)."""

        def ratio(num: torch.Tensor, den: torch.Tensor) -> float:
            return float(num / den) if float(den) > 0 else math.nan

        seen = self.class_kept > 0
        class_pointing = self.class_hits[seen] / self.class_kept[seen]
        with_auc = self.class_auc_count > 0
        class_auc = self.class_auc_sum[with_auc] / self.class_auc_count[with_auc]
        return {
            "auc": ratio(self.auc_sum, self.auc_count),
            "pointing": ratio(self.hits, self.kept),
            "auc_class_avg": float(class_auc.mean()) if class_auc.numel() else math.nan,
            "pointing_class_avg": float(class_pointing.mean()) if class_pointing.numel() else math.nan,
            "cos": ratio(self.cos_sum, self.similarity_count),
            "l2": ratio(self.l2_sum, self.similarity_count),
            "candidates": int(self.candidates),
            "kept": int(self.kept),
            "skipped": int(self.skipped_wrong + self.skipped_invalid),
            "skipped_wrong": int(self.skipped_wrong),
            "skipped_invalid": int(self.skipped_invalid),
            "auc_pairs": int(self.auc_count),
            "similarity_pairs": int(self.similarity_count),
        }


@dataclass
class LocalizationResult:
    """Result of :func:`localization_scores`.

    Attributes
    ----------
    totals : LocalizationTotals
        Sums and counts over the whole dataset (all processes).
    pairs : PairTable
        One row per candidate pair (CPU tensors): ``image`` (dataset index), ``class``,
        ``correct`` and ``teacher_correct`` (the model / teacher predicts the class; for
        "imagenet": the teacher's top-1 equals the model's), ``kept``, ``auc``, ``hit``, ``cos``,
        ``l2`` (NaN where not computed), and ``hit@t`` for every tolerance after the first.
    settings : dict
        The options of the run.
    """

    totals: LocalizationTotals
    pairs: PairTable = field(default_factory=lambda: PairTable.empty(PAIR_COLUMNS))
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """``auc``, ``pointing`` (means over kept pairs, as the paper; pointing at the first
        tolerance), their class averages, ``cos`` and ``l2`` (means over the similarity pairs),
        the pair counts, and ``pointing@t`` for every tolerance ``t`` after the first."""
        summary = self.totals.summary()
        kept = float(self.totals.kept)
        for tolerance, hits in zip(self.settings.get("tolerances", ())[1:], self.totals.extra_hits.tolist()):
            summary[f"pointing@{tolerance}"] = hits / kept if kept > 0 else math.nan
        return summary

    def to_dict(self) -> dict[str, Any]:
        """The summary, the per-pair table and the settings, as plain JSON-ready data."""
        return {"summary": self.summary(), "pairs": self.pairs.to_dict(), "settings": dict(self.settings)}


# ------------------------------------------------------------------------------------------ pair selection


@dataclass
class PairSelection:
    """The candidate (image, class) pairs of one batch and what the protocol decided for each.

    ``pairs`` holds (index of the image in the batch, class); ``objects`` and ``void`` are the
    pairs' binary masks; ``kept`` marks the pairs scored for AUC and pointing, ``similar`` those
    compared with the teacher's maps.
    """

    pairs: torch.Tensor
    correct: torch.Tensor
    teacher_correct: torch.Tensor
    kept: torch.Tensor
    similar: torch.Tensor
    objects: torch.Tensor
    void: torch.Tensor
    skipped_wrong: torch.Tensor
    skipped_invalid: torch.Tensor


def class_presence(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, C)`` bool: class ``k`` has a pixel (value ``k + 1``) in each mask; checks the values."""
    flat = masks.flatten(1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) > VOID):
        raise DataError("masks must hold 0 (background), k + 1 for class k, or 255 (void); got other values")
    counts = torch.zeros(flat.shape[0], VOID + 1, dtype=torch.int32, device=flat.device)
    counts.scatter_add_(1, flat, torch.ones(1, dtype=torch.int32, device=flat.device).expand_as(flat))
    stray = counts[:, num_classes + 1:VOID]
    if bool((stray > 0).any()):
        value = int((stray > 0).any(0).nonzero()[0]) + num_classes + 1
        raise DataError(
            f"mask value {value} is not a class of this {num_classes}-class dataset (values are 0, "
            f"1..{num_classes} and 255); check that the dataset and the model match"
        )
    return counts[:, 1:num_classes + 1] > 0


def _voc_pairs(masks, logits, teacher_logits, num_classes):
    pairs = class_presence(masks, num_classes).nonzero()
    correct = logits[pairs[:, 0], pairs[:, 1]] > 0
    teacher_correct = (teacher_logits[pairs[:, 0], pairs[:, 1]] > 0 if teacher_logits is not None
                       else torch.zeros_like(correct))
    objects = masks[pairs[:, 0]].long() == (pairs[:, 1] + 1).view(-1, 1, 1)
    kept = correct.clone()
    return pairs, correct, teacher_correct, objects, kept, (~correct).sum(), torch.zeros((), device=masks.device)


def _imagenet_pairs(masks, logits, teacher_logits, num_classes):
    count = masks.shape[0]
    top1 = logits.argmax(1)
    pairs = torch.stack([torch.arange(count, device=masks.device), top1], dim=1)
    correct = torch.ones(count, dtype=torch.bool, device=masks.device)
    teacher_correct = (teacher_logits.argmax(1) == top1 if teacher_logits is not None
                       else torch.zeros_like(correct))
    objects = (masks > 0) & (masks != VOID)
    kept = objects.flatten(1).any(1)  # an image without object pixels cannot be scored
    return pairs, correct, teacher_correct, objects, kept, torch.zeros((), device=masks.device), (~kept).sum()


def _teacher_pairs(masks, logits, teacher_logits, num_classes):
    # The teacher's top-1 class for every image: the same pairs for every model (the teacher itself
    # has no teacher, so its own logits decide).
    count = masks.shape[0]
    reference = logits if teacher_logits is None else teacher_logits
    top1 = reference.argmax(1)
    pairs = torch.stack([torch.arange(count, device=masks.device), top1], dim=1)
    correct = logits.argmax(1) == top1
    teacher_correct = torch.ones_like(correct) if teacher_logits is not None else torch.zeros_like(correct)
    objects = (masks > 0) & (masks != VOID)
    kept = objects.flatten(1).any(1)  # localization only where the image has a mask
    none = torch.zeros((), device=masks.device)
    return pairs, correct, teacher_correct, objects, kept, none, none


_PAIR_SELECTORS = {"voc": _voc_pairs, "imagenet": _imagenet_pairs, "teacher": _teacher_pairs}


def select_pairs(protocol: str, masks: torch.Tensor, logits: torch.Tensor, *, num_classes: int,
                 teacher_logits: torch.Tensor | None = None, similarity: str = "kept") -> PairSelection:
    """The pairs ``protocol`` scores for one batch, and the ones compared with the teacher.

    Examples
    --------
    >>> masks = torch.tensor([[[0, 1], [2, 2]]], dtype=torch.uint8)  # classes 0 and 1
    >>> chosen = select_pairs("voc", masks, torch.tensor([[1.0, -1.0, 0.5]]), num_classes=3)
    >>> chosen.pairs.tolist(), chosen.kept.tolist()
    ([[0, 0], [0, 1]], [True, False])
    """
    check_choice(protocol, "protocol", PROTOCOL_NAMES)
    check_choice(similarity, "similarity", SIMILARITY_PAIR_NAMES)
    pairs, correct, teacher_correct, objects, kept, wrong, invalid = _PAIR_SELECTORS[protocol](
        masks, logits, teacher_logits, num_classes)
    if teacher_logits is None:
        similar = torch.zeros_like(kept)
    elif protocol == "teacher" and similarity != "both":
        similar = torch.ones_like(kept)  # every image is compared, with or without a mask
    elif similarity == "kept":
        similar = kept.clone()
    elif similarity == "both":
        similar = correct & teacher_correct & objects.flatten(1).any(1)
    else:
        similar = torch.ones_like(kept)
    return PairSelection(pairs, correct, teacher_correct, kept, similar, objects, masks[pairs[:, 0]] == VOID,
                         wrong.double(), invalid.double())


# ------------------------------------------------------------------------------------------ scoring


def score_maps(maps: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor | None,
               tolerances: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """AUC ``(P,)`` (of the min-max normalised maps) and pointing hits ``(P, len(tolerances))``."""
    if maps.shape[0] == 0:
        return (torch.empty(0, dtype=torch.float64, device=maps.device),
                torch.empty(0, len(tolerances), dtype=torch.float64, device=maps.device))
    if ignore is not None and not bool(ignore.any()):
        ignore = None
    auc = roc_auc(normalize_maps(maps), masks, ignore=ignore)
    hits = torch.stack([pointing_game(maps, masks, tolerance=t) for t in tolerances], dim=1).double()
    return auc, hits


def _finite(maps: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(maps).flatten(1).all(1)


@dataclass
class _Scoring:
    """The fixed options of one run of the protocol, and the maps and scores of one batch."""

    model: nn.Module
    method: str
    layer: str | None
    teacher: nn.Module | None
    teacher_layer: str | None
    similarity_method: str
    tolerances: tuple[int, ...]
    options: dict
    cache: MapCache | None = None
    teacher_cache: MapCache | None = None

    def explain(self, which: str, image_index, images, *, pairs, method) -> torch.Tensor:
        """Maps of the model or the teacher (``which``), from its cache when it has one."""
        model, layer, cache = ((self.model, self.layer, self.cache) if which == "model"
                               else (self.teacher, self.teacher_layer, self.teacher_cache))
        if cache is not None:
            return cache.maps(method, image_index, images, pairs)
        return attribution.explain(model, images, pairs, method=method, layer=layer, **self.options)

    def logits(self, which: str, image_index, images) -> torch.Tensor:
        model, cache = (self.model, self.cache) if which == "model" else (self.teacher, self.teacher_cache)
        return cache.logits(image_index, images) if cache is not None else model(images)

    def score(self, image_index: torch.Tensor, images: torch.Tensor, chosen: PairSelection) -> dict[str, torch.Tensor]:
        """Per-pair ``auc``, ``hits``, ``cos``, ``l2`` of one batch; marks non-finite maps as skipped."""
        size = len(chosen.pairs)
        nan = torch.full((size,), math.nan, dtype=torch.float64, device=images.device)
        scores = {"auc": nan, "cos": nan.clone(), "l2": nan.clone(),
                  "hits": torch.full((size, len(self.tolerances)), math.nan, dtype=torch.float64,
                                     device=images.device)}
        shared = self.similarity_method == self.method  # one set of maps serves both scores
        need = chosen.kept | (chosen.similar if shared else torch.zeros_like(chosen.kept))
        where = need.nonzero().squeeze(1)
        maps = None
        if where.numel():
            maps = self.explain("model", image_index, images, pairs=chosen.pairs[where], method=self.method)
            if maps.shape[-2:] != chosen.objects.shape[-2:]:
                raise ValidationError(f"attribution maps of size {tuple(maps.shape[-2:])} do not match the "
                                      f"masks' {tuple(chosen.objects.shape[-2:])}")
            invalid = torch.zeros_like(chosen.kept)
            invalid[where[~_finite(maps)]] = True
            chosen.skipped_invalid += (invalid & chosen.kept).sum()
            chosen.kept &= ~invalid
            chosen.similar &= ~invalid
            scored = chosen.kept[where]
            picked = where[scored]
            scores["auc"][picked], scores["hits"][picked] = score_maps(
                maps[scored], chosen.objects[picked], chosen.void[picked], self.tolerances)
        self._similarity(image_index, images, chosen, scores=scores, maps=maps if shared else None, where=where)
        return scores

    def _similarity(self, image_index, images, chosen, *, scores, maps, where) -> None:
        sim_where = chosen.similar.nonzero().squeeze(1)
        if not sim_where.numel():
            return
        if maps is not None:
            student_maps = maps[torch.searchsorted(where, sim_where)]
        else:
            student_maps = self.explain("model", image_index, images, pairs=chosen.pairs[sim_where],
                                        method=self.similarity_method)
        teacher_maps = self.explain("teacher", image_index, images, pairs=chosen.pairs[sim_where],
                                    method=self.similarity_method)
        both = _finite(student_maps) & _finite(teacher_maps)
        sim_where, student_maps, teacher_maps = sim_where[both], student_maps[both], teacher_maps[both]
        if sim_where.numel():
            scores["cos"][sim_where] = cosine_similarity(student_maps, teacher_maps).double()
            scores["l2"][sim_where] = normalized_l2(student_maps, teacher_maps).double()


# ------------------------------------------------------------------------------------------ the protocol


def _split_batch(batch, device) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise DataError("dataset items must be (image, label) or (image, label, mask) tuples")
    images = batch[0].to(device)
    if len(batch) < 3:  # no masks: every pixel unknown (void), so nothing is scored on localization
        return images, torch.full((images.shape[0], *images.shape[-2:]), VOID, dtype=torch.uint8, device=device)
    masks = batch[2].to(device)
    if masks.dim() != 3 or masks.shape[-2:] != images.shape[-2:]:
        raise DataError(f"masks must be (H, W) at the image size {tuple(images.shape[-2:])}, "
                        f"got a batch of shape {tuple(masks.shape)}")
    return images, masks


@dataclass(frozen=True)
class LocalizationSettings:
    """The options of one run of the protocol (see :func:`localization_scores` for each)."""

    method: str = "gradcam"
    layer: str | None = None
    teacher_layer: str | None = None
    protocol: str = "voc"
    similarity: str = "kept"
    similarity_method: str | None = None
    tolerances: Sequence[int] = (0,)
    batch_size: int = 16
    num_workers: int = 0
    device: str | torch.device | None = None
    explain_options: Mapping[str, Any] | None = None
    progress: bool = True

    @classmethod
    def from_options(cls, settings: LocalizationSettings | None = None, **options: Any) -> LocalizationSettings:
        """``settings`` (default: the defaults) with the keyword ``options`` replaced; unknown names raise."""
        check_known(options, "localization option", [f.name for f in fields(cls)])
        return replace(settings if settings is not None else cls(), **options)

    def checked(self) -> LocalizationSettings:
        """The settings validated, with ``similarity_method`` filled in and ``tolerances`` a tuple of ints."""
        similarity_method = self.method if self.similarity_method is None else self.similarity_method
        attribution.ATTRIBUTION_METHODS.get(self.method)
        attribution.ATTRIBUTION_METHODS.get(similarity_method)
        check_choice(self.protocol, "protocol", PROTOCOL_NAMES)
        check_choice(self.similarity, "similarity", SIMILARITY_PAIR_NAMES)
        tolerances = self.tolerances
        if isinstance(tolerances, (str, bytes)) or not isinstance(tolerances, Sequence) or not tolerances:
            raise ValidationError(f"tolerances must list at least one pointing-game tolerance, e.g. (0,), "
                                  f"got {tolerances!r}")
        tolerances = tuple(check_int(t, "each of tolerances", minimum=0) for t in tolerances)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.num_workers, "num_workers", minimum=0)
        return replace(self, similarity_method=similarity_method, tolerances=tolerances)

    def record(self, *, teacher: bool, num_images: int) -> dict[str, Any]:
        """The options a result keeps, for the record."""
        return {"method": self.method, "layer": self.layer, "protocol": self.protocol, "similarity": self.similarity,
                "similarity_method": self.similarity_method, "tolerances": list(self.tolerances),
                "teacher": teacher, "num_images": num_images}


class _Accumulator:
    """The totals and per-pair columns of one process's share, batch after batch."""

    def __init__(self, settings: LocalizationSettings, num_classes: int | None, device: torch.device):
        self.settings, self.num_classes, self.device = settings, num_classes, device
        self.names = PAIR_COLUMNS + tuple(f"hit@{t}" for t in settings.tolerances[1:])
        self.columns: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}
        self.totals: LocalizationTotals | None = None

    def classes_of(self, logits: torch.Tensor) -> int:
        """The class count (the dataset's, else the model's), checked against the model's outputs."""
        self.num_classes = logits.shape[1] if self.num_classes is None else self.num_classes
        if logits.shape[1] != self.num_classes:
            raise ValidationError(f"the model has {logits.shape[1]} outputs but the dataset has "
                                  f"{self.num_classes} classes; use a model trained on this dataset")
        if self.totals is None:
            self.totals = LocalizationTotals.zeros(self.num_classes, self.device,
                                                   tolerances=len(self.settings.tolerances))
        return self.num_classes

    def add(self, image_index: torch.Tensor, chosen: PairSelection, scores: dict[str, torch.Tensor]) -> None:
        """Add one batch's pairs and scores."""
        totals = self.totals
        totals.candidates += len(chosen.pairs)
        totals.skipped_wrong += chosen.skipped_wrong
        totals.skipped_invalid += chosen.skipped_invalid
        totals.add(chosen.pairs[:, 1], chosen.kept, auc=scores["auc"], hits=scores["hits"], cos=scores["cos"],
                   l2=scores["l2"])
        values = (image_index[chosen.pairs[:, 0]], chosen.pairs[:, 1], chosen.correct, chosen.teacher_correct,
                  chosen.kept, scores["auc"], scores["hits"][:, 0], scores["cos"], scores["l2"],
                  *scores["hits"][:, 1:].unbind(1))
        for name, column in zip(self.names, values):
            self.columns[name].append(column)

    def result(self, world: int, record: dict[str, Any]) -> LocalizationResult:
        """The totals and the per-pair table of every process."""
        totals = self.totals
        if totals is None:  # an empty dataset, or an empty share of one
            totals = LocalizationTotals.zeros(self.num_classes or 0, self.device,
                                              tolerances=len(self.settings.tolerances))
        return LocalizationResult(totals=totals.all_reduce(), pairs=_gather_table(self.columns, self.device, world),
                                  settings=record)


def _gather_table(columns: dict[str, list[torch.Tensor]], device, world: int) -> PairTable:
    """The per-pair table of every process, in dataset order, on the CPU."""
    table = {}
    for name, parts in columns.items():
        values = torch.cat(parts) if parts else torch.empty(0, device=device)
        if values.dtype == torch.bool:  # collectives move numbers, not bools
            table[name] = all_gather_rows(values.to(torch.uint8)).bool().cpu()
        else:
            table[name] = all_gather_rows(values).cpu()
    pairs = PairTable(table)
    if world > 1:  # the shares interleave; put the pairs back in dataset order
        pairs = pairs.select(torch.argsort(pairs.keys(), stable=True))
    return pairs


def _check_inputs(model, dataset, teacher) -> None:
    check_module(model)
    if teacher is not None:
        check_module(teacher, "teacher")
    check_dataset(dataset, allow_empty=True)


def _check_caches(model, teacher, cache, teacher_cache) -> None:
    for name, given, owner in (("cache", cache, model), ("teacher_cache", teacher_cache, teacher)):
        if given is not None and given.model is not owner:
            raise ValidationError(f"{name} holds the outputs of another model; pass a MapCache of this one")


def localization_scores(
    model: nn.Module,
    dataset,
    *,
    teacher: nn.Module | None = None,
    cache: MapCache | None = None,
    teacher_cache: MapCache | None = None,
    settings: LocalizationSettings | None = None,
    **options: Any,
) -> LocalizationResult:
    """Score a model's attribution maps against ground-truth masks with the paper's protocol.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier whose maps are scored.  Left on its device and in its mode afterwards.
    dataset : Dataset
        Items ``(image, label, mask)``: mask ``(H, W)`` integer, 0 background, ``k + 1`` class
        ``k``, 255 void.  ``dataset.num_classes`` (or the model's output size) gives the classes.
    teacher : torch.nn.Module, optional
        The original model: adds the cosine similarity and normalised L2 of the two maps.
    cache, teacher_cache : MapCache, optional
        Where the model's and the teacher's logits and maps are read from and kept (a
        :class:`~apkit.evaluation.maps.MapCache` of that model, on this dataset): an audit passes
        one teacher cache to every student, so the teacher's work is done once.
    settings : LocalizationSettings, optional
        The options below as one value; keyword ``options`` override its fields.
    **options
        The fields of :class:`LocalizationSettings`:

        method : str
            Attribution method (``apkit list``), passed to :func:`apkit.explain` (default "gradcam").
        layer, teacher_layer : str, optional
            Layer of layer methods for the model and the teacher (default: their attribution layer).
        protocol : {"voc", "imagenet"}
            Which pairs are scored (see the module documentation).
        similarity : {"kept", "both", "all"}
            Which pairs the similarity uses (see the module documentation).
        similarity_method : str, optional
            Attribution method of the similarity maps; default ``method``.
        tolerances : sequence of int
            Pointing-game tolerances in pixels, all scored on the same maps; 0 is the paper's strict
            rule.  The first is reported as ``pointing`` (per pair ``hit``), every other ``t`` as
            ``pointing@t`` (``hit@t``).
        batch_size : int
            Images per batch (per process under ``torchrun``); memory stays bounded by it.
        num_workers : int
            DataLoader worker processes.
        device : str or torch.device, optional
            ``"cpu"``, ``"cuda"``; ``None`` picks CUDA when available.
        explain_options : mapping, optional
            Extra keyword arguments of :func:`apkit.explain` (e.g. ``{"batch_size": 32}``).
        progress : bool
            Show a progress bar.

    Returns
    -------
    LocalizationResult
        ``.summary()`` gives ``auc``, ``pointing``, ``cos``, ``l2`` and the pair counts;
        ``.pairs`` the per-pair :class:`~apkit.evaluation.pairs.PairTable`.  Under ``torchrun``
        every process scores a disjoint share of the images and returns the totals and pairs of
        the whole dataset.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from apkit import models
    >>> net = models.create("vgg_small", num_classes=8)
    >>> masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    >>> masks[:, 10:30, 10:30] = 3  # class 2
    >>> data = TensorDataset(torch.randn(2, 3, 64, 64), torch.zeros(2, 8), masks)
    >>> result = localization_scores(net, data, protocol="imagenet", device="cpu", progress=False)
    >>> result.summary()["kept"]
    2
    """
    _check_inputs(model, dataset, teacher)
    settings = LocalizationSettings.from_options(settings, **options).checked()
    device = local_device(resolve_device(settings.device))
    _check_caches(model, teacher, cache, teacher_cache)
    scoring = _Scoring(model, settings.method, settings.layer, teacher, settings.teacher_layer,
                       settings.similarity_method, settings.tolerances, dict(settings.explain_options or {}),
                       cache, teacher_cache)
    rank, world = world_info()
    indices = list(range(rank, len(dataset), world))
    loader = DataLoader(dataset, batch_size=settings.batch_size, sampler=indices, shuffle=False,
                        num_workers=settings.num_workers)
    accumulator = _Accumulator(settings, getattr(dataset, "num_classes", None), device)
    position = 0
    models = [model] + ([teacher] if teacher is not None else [])
    with evaluating(*models, device=device), torch.no_grad():
        for batch in tqdm(loader, desc=f"localization ({settings.method})", leave=False,
                          disable=not (settings.progress and rank == 0)):
            images, masks = _split_batch(batch, device)
            image_index = torch.tensor(indices[position:position + len(images)], device=device)
            position += len(images)
            _score_batch(scoring, accumulator, image_index=image_index, images=images, masks=masks)
    return accumulator.result(world, settings.record(teacher=teacher is not None, num_images=len(dataset)))


def _score_batch(scoring: _Scoring, accumulator: _Accumulator, *, image_index: torch.Tensor, images: torch.Tensor,
                 masks: torch.Tensor) -> None:
    """Select, explain and score the pairs of one batch, and add them to ``accumulator``."""
    logits = scoring.logits("model", image_index, images)
    num_classes = accumulator.classes_of(logits)
    settings = accumulator.settings
    teacher_logits = scoring.logits("teacher", image_index, images) if scoring.teacher is not None else None
    chosen = select_pairs(settings.protocol, masks, logits, num_classes=num_classes,
                          similarity=settings.similarity, teacher_logits=teacher_logits)
    accumulator.add(image_index, chosen, scoring.score(image_index, images, chosen))
