"""The paper's localization protocol: attribution maps against segmentation masks over a dataset.

:func:`localization_scores` streams a segmentation dataset (items ``(image, label, mask)``, mask
0 = background, ``k + 1`` = class ``k``, 255 = void) through a model and, for every
(image, class) pair the protocol selects, computes the model's attribution map with
:func:`apkit.explain` and scores it:

* **"voc"** (METHOD §4.2): the ground-truth classes of an image are those with at least one pixel
  in its mask; a pair is kept when the model predicts its class (logit > 0), the others are
  skipped.  The class mask is ``mask == k + 1``.
* **"imagenet"** (supplement B): the model's top-1 class for every image, scored against the
  object mask ``(mask > 0) & (mask != 255)``, since the masks' classes are not the model's.

For each kept pair: ROC-AUC of the map, min-max normalised as the paper does
(``(H - min) / (max - min + 1e-5)``), against the mask; the strict pointing game (or a pixel
tolerance) on the raw map.  Void pixels (255) are left out of the AUC when a mask holds them; the
paper's VOC loader maps them to background (negatives) instead, which apkit's VOC dataset does by
default.  A map holding NaN or inf is skipped, as in the paper.

With a ``teacher``, the cosine similarity and normalised L2 distance between the model's and the
teacher's maps are computed on the same pairs (METHOD §4.3 leaves the pairs open).  The default
``similarity="kept"`` uses the pairs kept for the model's AUC; ``"both"`` only the pairs that both
models predict correctly (for "imagenet": where both have the same top-1 class); ``"all"`` every
candidate pair.

Totals are sums and counts (:class:`LocalizationTotals`) that add up over batches and, under
``torchrun``, over processes; the per-pair values are kept for reports.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from apkit._validation import check_choice, check_int, resolve_device
from apkit.errors import DataError, ValidationError
from apkit.metrics.localization import pointing_game, roc_auc
from apkit.metrics.similarity import cosine_similarity, normalized_l2

__all__ = ["PROTOCOLS", "SIMILARITY_PAIRS", "LocalizationResult", "LocalizationTotals", "localization_scores",
           "normalize_maps"]

PROTOCOLS = ("voc", "imagenet")
SIMILARITY_PAIRS = ("kept", "both", "all")
VOID = 255
# Columns of the per-pair table.
PAIR_COLUMNS = ("image", "class", "correct", "teacher_correct", "kept", "auc", "hit", "cos", "l2")


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """The paper's min-max normalisation of each map: ``(H - min) / (max - min + 1e-5)``.

    Examples
    --------
    >>> normalize_maps(torch.tensor([[[1.0, 3.0]]]))
    tensor([[[0.0000, 1.0000]]])
    """
    flat = maps.flatten(1)
    low = flat.amin(1).view(-1, 1, 1)
    high = flat.amax(1).view(-1, 1, 1)
    return (maps - low) / (high - low + 1e-5)


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
    extra_hits: torch.Tensor  # hits at each extra pointing tolerance, over the kept pairs

    @classmethod
    def zeros(cls, num_classes: int, device: torch.device | str = "cpu", *,
              extra_tolerances: int = 0) -> LocalizationTotals:
        """Empty totals (``extra_tolerances``: how many extra pointing tolerances are counted)."""
        values = {}
        for f in fields(cls):
            size = (num_classes,) if f.name.startswith("class_") else (
                (extra_tolerances,) if f.name.startswith("extra_") else ())
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
        from apkit.training.distributed import all_reduce_sum

        return self._from_vector(all_reduce_sum(self._vector()))

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
    pairs : dict of str to Tensor
        One entry per candidate pair (CPU tensors): ``image`` (dataset index), ``class``,
        ``correct`` and ``teacher_correct`` (the model / teacher predicts the class; for
        "imagenet": the teacher's top-1 equals the model's), ``kept``, ``auc``, ``hit``, ``cos``,
        ``l2`` (NaN where not computed).
    settings : dict
        The options of the run.
    """

    totals: LocalizationTotals
    pairs: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """``auc``, ``pointing`` (means over kept pairs, as the paper), their class averages,
        ``cos`` and ``l2`` (means over the similarity pairs), the pair counts, and
        ``pointing@t`` for every extra tolerance ``t``."""
        summary = self.totals.summary()
        kept = float(self.totals.kept)
        for tolerance, hits in zip(self.settings.get("extra_tolerances", ()), self.totals.extra_hits.tolist()):
            summary[f"pointing@{tolerance}"] = hits / kept if kept > 0 else math.nan
        return summary

    def pair_values(self) -> dict[str, list]:
        """The per-pair table as plain lists (JSON-ready; NaN stays a float NaN)."""
        return {name: values.tolist() for name, values in self.pairs.items()}


# ------------------------------------------------------------------------------------------ protocol


@contextlib.contextmanager
def _on_device(models: list[nn.Module], device: torch.device) -> Iterator[None]:
    """Move the models to ``device`` in eval mode; restore their devices and modes afterwards."""
    states = []
    for model in models:
        parameter = next(iter(model.parameters()), None)
        states.append((model, parameter.device if parameter is not None else None,
                       [m.training for m in model.modules()]))
    try:
        for model in models:
            model.to(device).eval()
        yield
    finally:
        for model, previous, modes in states:
            for module, mode in zip(model.modules(), modes):
                module.training = mode
            if previous is not None and previous != device:
                model.to(previous)


def _class_presence(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
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


def _scores(maps: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor | None,
            tolerances: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """AUC ``(P,)`` and pointing hits ``(P, len(tolerances))`` of one batch of maps."""
    if maps.shape[0] == 0:
        return (torch.empty(0, dtype=torch.float64, device=maps.device),
                torch.empty(0, len(tolerances), dtype=torch.float64, device=maps.device))
    if ignore is not None and not bool(ignore.any()):
        ignore = None
    auc = roc_auc(normalize_maps(maps), masks, ignore=ignore)
    hits = torch.stack([pointing_game(maps, masks, tolerance=t) for t in tolerances], dim=1).double()
    return auc, hits


def localization_scores(
    model: nn.Module,
    dataset,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    teacher: nn.Module | None = None,
    teacher_layer: str | None = None,
    protocol: str = "voc",
    similarity: str = "kept",
    similarity_method: str | None = None,
    tolerance: int = 0,
    extra_tolerances: Sequence[int] = (),
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    explain_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> LocalizationResult:
    """Score a model's attribution maps against ground-truth masks with the paper's protocol.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier whose maps are scored.  Left on its device and in its mode afterwards.
    dataset : Dataset
        Items ``(image, label, mask)``: mask ``(H, W)`` integer, 0 background, ``k + 1`` class
        ``k``, 255 void.  ``dataset.num_classes`` (or the model's output size) gives the classes.
    method : str
        Attribution method (``apkit list``), passed to :func:`apkit.explain`.
    layer : str, optional
        Layer of layer methods (default: the model's attribution layer).
    teacher : torch.nn.Module, optional
        The original model: adds the cosine similarity and normalised L2 of the two maps.
    teacher_layer : str, optional
        The teacher's layer (default: its attribution layer).
    protocol : {"voc", "imagenet"}
        Which pairs are scored (see the module documentation).
    similarity : {"kept", "both", "all"}
        Which pairs the similarity uses (see the module documentation).
    similarity_method : str, optional
        Attribution method of the similarity maps; default ``method``.
    tolerance : int
        Pointing-game tolerance in pixels; 0 is the paper's strict rule.
    extra_tolerances : sequence of int
        More pointing-game tolerances scored on the same maps, reported as ``pointing@t``
        (and the per-pair columns ``hit@t``).
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
        ``.pairs`` the per-pair values.  Under ``torchrun`` every process scores a disjoint share
        of the images and returns the totals and pairs of the whole dataset.

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
    from apkit.attribution import METHODS, explain
    from apkit.training.distributed import all_gather_rows, local_device, world_info

    if not isinstance(model, nn.Module):
        raise ValidationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise ValidationError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise ValidationError(f"dataset must be a map-style Dataset, got {type(dataset).__name__}")
    METHODS.get(method)
    similarity_method = method if similarity_method is None else similarity_method
    METHODS.get(similarity_method)
    check_choice(protocol, "protocol", PROTOCOLS)
    check_choice(similarity, "similarity", SIMILARITY_PAIRS)
    check_int(tolerance, "tolerance", minimum=0)
    extra_tolerances = tuple(check_int(t, "extra_tolerances", minimum=0) for t in extra_tolerances)
    tolerances = (tolerance, *extra_tolerances)
    pair_columns = PAIR_COLUMNS + tuple(f"hit@{t}" for t in extra_tolerances)
    check_int(batch_size, "batch_size", minimum=1)
    check_int(num_workers, "num_workers", minimum=0)
    options = dict(explain_options or {})
    device = local_device(resolve_device(device))
    num_classes = getattr(dataset, "num_classes", None)

    rank, world = world_info()
    indices = list(range(rank, len(dataset), world))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, shuffle=False, num_workers=num_workers)
    totals: LocalizationTotals | None = None
    columns: dict[str, list[torch.Tensor]] = {name: [] for name in pair_columns}
    position = 0
    models = [model] + ([teacher] if teacher is not None else [])
    with _on_device(models, device), torch.no_grad():
        for batch in tqdm(loader, desc=f"localization ({method})", leave=False,
                          disable=not (progress and rank == 0)):
            if not isinstance(batch, (list, tuple)) or len(batch) < 3:
                raise DataError("dataset items must be (image, label, mask); this dataset has no masks")
            images, masks = batch[0].to(device), batch[2].to(device)
            if masks.dim() != 3 or masks.shape[-2:] != images.shape[-2:]:
                raise DataError(f"masks must be (H, W) at the image size {tuple(images.shape[-2:])}, "
                                f"got a batch of shape {tuple(masks.shape)}")
            count = images.shape[0]
            image_index = torch.tensor(indices[position:position + count], device=device)
            position += count
            logits = model(images)
            if num_classes is None:
                num_classes = logits.shape[1]
            if logits.shape[1] != num_classes:
                raise ValidationError(f"the model has {logits.shape[1]} outputs but the dataset has "
                                      f"{num_classes} classes; use a model trained on this dataset")
            if totals is None:
                totals = LocalizationTotals.zeros(num_classes, device, extra_tolerances=len(extra_tolerances))
            teacher_logits = teacher(images) if teacher is not None else None

            # Candidate pairs, whether each is kept, and its binary mask.
            if protocol == "voc":
                pairs = _class_presence(masks, num_classes).nonzero()
                correct = logits[pairs[:, 0], pairs[:, 1]] > 0
                teacher_correct = (teacher_logits[pairs[:, 0], pairs[:, 1]] > 0 if teacher_logits is not None
                                   else torch.zeros_like(correct))
                objects = masks[pairs[:, 0]].long() == (pairs[:, 1] + 1).view(-1, 1, 1)
                kept = correct.clone()
                totals.skipped_wrong += float((~correct).sum())
            else:
                top1 = logits.argmax(1)
                pairs = torch.stack([torch.arange(count, device=device), top1], dim=1)
                correct = torch.ones(count, dtype=torch.bool, device=device)
                teacher_correct = (teacher_logits.argmax(1) == top1 if teacher_logits is not None
                                   else torch.zeros_like(correct))
                objects = (masks > 0) & (masks != VOID)
                kept = objects.flatten(1).any(1)  # an image without object pixels cannot be scored
                totals.skipped_invalid += float((~kept).sum())
            void = masks[pairs[:, 0]] == VOID
            totals.candidates += float(pairs.shape[0])

            if teacher is None:
                similar = torch.zeros_like(kept)
            elif similarity == "kept":
                similar = kept.clone()
            elif similarity == "both":
                similar = correct & teacher_correct & objects.flatten(1).any(1)
            else:
                similar = torch.ones_like(kept)

            auc = torch.full((pairs.shape[0],), math.nan, dtype=torch.float64, device=device)
            cos, l2 = auc.clone(), auc.clone()
            hits = torch.full((pairs.shape[0], len(tolerances)), math.nan, dtype=torch.float64, device=device)
            # The model's maps for every pair it needs (kept or compared with the teacher).
            need = kept | (similar if similarity_method == method else torch.zeros_like(kept))
            maps = torch.empty(0, *images.shape[-2:], device=device)
            where = need.nonzero().squeeze(1)
            if where.numel():
                maps = explain(model, images, pairs[where], method=method, layer=layer, **options)
                if maps.shape[-2:] != masks.shape[-2:]:
                    raise ValidationError(f"attribution maps of size {tuple(maps.shape[-2:])} do not match the "
                                          f"masks' {tuple(masks.shape[-2:])}")
                finite = torch.isfinite(maps).flatten(1).all(1)
                invalid = torch.zeros_like(kept)
                invalid[where[~finite]] = True
                totals.skipped_invalid += float((invalid & kept).sum())
                kept &= ~invalid
                similar &= ~invalid
                score = kept[where]
                pair_auc, pair_hits = _scores(maps[score], objects[where[score]], void[where[score]], tolerances)
                auc[where[score]], hits[where[score]] = pair_auc, pair_hits

            # Similarity to the teacher's maps on the same pairs.
            sim_where = similar.nonzero().squeeze(1)
            if sim_where.numel():
                if similarity_method == method:
                    student_maps = maps[torch.searchsorted(where, sim_where)]
                else:
                    student_maps = explain(model, images, pairs[sim_where], method=similarity_method, layer=layer,
                                           **options)
                teacher_maps = explain(teacher, images, pairs[sim_where], method=similarity_method,
                                       layer=teacher_layer, **options)
                both_finite = (torch.isfinite(student_maps).flatten(1).all(1)
                               & torch.isfinite(teacher_maps).flatten(1).all(1))
                sim_where, student_maps, teacher_maps = (sim_where[both_finite], student_maps[both_finite],
                                                         teacher_maps[both_finite])
                if sim_where.numel():
                    cos[sim_where] = cosine_similarity(student_maps, teacher_maps).double()
                    l2[sim_where] = normalized_l2(student_maps, teacher_maps).double()

            _accumulate(totals, pairs[:, 1], kept, auc, hits, cos, l2)
            for name, values in zip(pair_columns, (image_index[pairs[:, 0]], pairs[:, 1], correct, teacher_correct,
                                                   kept, auc, hits[:, 0], cos, l2, *hits[:, 1:].unbind(1))):
                columns[name].append(values)

    if totals is None:  # an empty dataset, or an empty share of one
        totals = LocalizationTotals.zeros(num_classes or 0, device, extra_tolerances=len(extra_tolerances))
    totals = totals.all_reduce()
    table = {}
    for name, parts in columns.items():
        values = torch.cat(parts) if parts else torch.empty(0, device=device)
        if values.dtype == torch.bool:  # collectives move numbers, not bools
            table[name] = all_gather_rows(values.to(torch.uint8)).bool().cpu()
        else:
            table[name] = all_gather_rows(values).cpu()
    if world > 1:  # the shares interleave; put the pairs back in dataset order
        order = torch.argsort(table["image"] * (num_classes or 1) + table["class"], stable=True)
        table = {name: values[order] for name, values in table.items()}
    settings = {"method": method, "layer": layer, "protocol": protocol, "similarity": similarity,
                "similarity_method": similarity_method, "tolerance": tolerance,
                "extra_tolerances": list(extra_tolerances), "teacher": teacher is not None,
                "num_images": len(dataset)}
    return LocalizationResult(totals=totals, pairs=table, settings=settings)


def _accumulate(totals: LocalizationTotals, classes: torch.Tensor, kept: torch.Tensor, auc: torch.Tensor,
                hits: torch.Tensor, cos: torch.Tensor, l2: torch.Tensor) -> None:
    """Add one batch's pairs to ``totals`` (in place); ``hits`` has one column per tolerance."""
    hit = hits[:, 0]
    totals.extra_hits += hits[kept, 1:].sum(0)
    has_auc = kept & ~torch.isnan(auc)
    totals.kept += float(kept.sum())
    totals.auc_sum += auc[has_auc].sum()
    totals.auc_count += float(has_auc.sum())
    totals.hits += hit[kept].sum()
    has_similarity = ~torch.isnan(cos) & ~torch.isnan(l2)
    totals.cos_sum += cos[has_similarity].sum()
    totals.l2_sum += l2[has_similarity].sum()
    totals.similarity_count += float(has_similarity.sum())
    totals.class_kept.index_add_(0, classes[kept], torch.ones_like(hit[kept]))
    totals.class_hits.index_add_(0, classes[kept], hit[kept])
    totals.class_auc_sum.index_add_(0, classes[has_auc], auc[has_auc])
    totals.class_auc_count.index_add_(0, classes[has_auc], torch.ones_like(auc[has_auc]))
