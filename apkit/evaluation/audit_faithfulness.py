"""Faithfulness in the audit: deletion, insertion and ROAD of one model's maps on the teacher's top-1 class.

Every model of an audit is explained on the same (image, class) pairs: each image with the
teacher's top-1 class (the teacher itself with its own).  For each attribution method,
:func:`faithfulness_scores` perturbs each image in the order of the model's map and watches the
model's probability of that class, with the drivers of :mod:`apkit.evaluation.faithfulness`:

* ``deletion``: the area under the deletion curve (:func:`~apkit.evaluation.faithfulness.deletion_curve`,
  pixels replaced by ``deletion_baseline``, 0 by default); lower = more faithful.
* ``insertion``: the area under the insertion curve (pixels copied into the blurred image by
  default); higher = more faithful.
* ``road``: the mean over ``road_percentages`` of the LeRF probability minus the MoRF probability
  (:func:`~apkit.evaluation.faithfulness.road`, Rong et al. 2022): removing the least relevant
  pixels should hurt less than removing the most relevant ones, so higher = more faithful
  (0: the map ranks pixels no better than by chance).  ``road_morf`` and ``road_lerf``, the mean
  MoRF and LeRF probabilities, are kept beside it.

Each is one value per image; the mean deletion and insertion curves are kept for the report's
figure.  The images stream through in batches of ``batch_size``; each batch is one call of each
driver, which chunks its forward passes (``chunk`` images with all their steps per pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from apkit.core.errors import ValidationError
from apkit.core.modules import evaluating
from apkit.core.validation import check_int
from apkit.evaluation.faithfulness import curve_auc, deletion_curve, insertion_curve, road
from apkit.evaluation.maps import MapCache

__all__ = ["FAITHFULNESS_NAMES", "FaithfulnessResult", "FaithfulnessSettings", "faithfulness_scores"]

#: The faithfulness metrics an audit can measure (``AuditSettings.faithfulness``).
FAITHFULNESS_NAMES = ("deletion", "insertion", "road")


@dataclass(frozen=True)
class FaithfulnessSettings:
    """How the audit measures faithfulness (see the module documentation).

    ``metrics`` names some of :data:`FAITHFULNESS_NAMES` (empty: none); ``steps`` the deletion and
    insertion steps; ``road_percentages`` the fractions of pixels ROAD removes; ``chunk`` the images
    per forward pass (each with all its steps); ``seed`` the seed of ROAD's imputation noise.
    """

    metrics: Sequence[str] = FAITHFULNESS_NAMES
    steps: int = 10
    road_percentages: Sequence[float] = (0.2, 0.4, 0.6, 0.8)
    deletion_baseline: float | Sequence[float] | str = 0.0
    insertion_baseline: float | Sequence[float] | str = "blur"
    chunk: int = 8
    seed: int = 0

    def checked(self) -> FaithfulnessSettings:
        """The settings validated (names, steps, percentages), with tuples for the sequences."""
        metrics = self.metrics
        if isinstance(metrics, str) or not isinstance(metrics, Sequence):
            raise ValidationError(f"faithfulness must list metrics, e.g. ('deletion', 'insertion', 'road') or () "
                                  f"for none, got {metrics!r}")
        for name in metrics:
            if name not in FAITHFULNESS_NAMES:
                raise ValidationError(f"unknown faithfulness metric {name!r}; use some of "
                                      f"{', '.join(FAITHFULNESS_NAMES)} (or none)")
        check_int(self.steps, "faithfulness_steps", minimum=1)
        check_int(self.chunk, "faithfulness_chunk", minimum=1)
        percentages = tuple(self.road_percentages)
        if not percentages or not all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in percentages):
            raise ValidationError(f"road_percentages must be fractions in [0, 1], e.g. (0.2, 0.4, 0.6, 0.8), "
                                  f"got {self.road_percentages!r}")
        return replace(self, metrics=tuple(dict.fromkeys(metrics)), road_percentages=percentages)


@dataclass
class FaithfulnessResult:
    """Per-image faithfulness of one model under one method.

    Attributes
    ----------
    images : Tensor (N,)
        Dataset indices of the images.
    classes : Tensor (N,)
        The explained class of each image (the teacher's top-1).
    values : dict
        ``{metric: Tensor (N,)}``: ``deletion``, ``insertion``, ``road`` (and ``road_morf``,
        ``road_lerf``) as measured, float64 on the CPU.
    curves : dict
        ``{"deletion" | "insertion": Tensor (steps + 1,)}``: the mean curve over the images.
    """

    images: torch.Tensor
    classes: torch.Tensor
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    curves: dict[str, torch.Tensor] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """The mean of each metric over the images (NaN ones left out)."""
        return {name: float(torch.nanmean(v)) if len(v) else float("nan") for name, v in self.values.items()}


def _batch_measures(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, *,
                    settings: FaithfulnessSettings, task: str) -> dict[str, torch.Tensor]:
    """Every chosen metric's values (and curves) of one batch: one call of each driver."""
    out: dict[str, torch.Tensor] = {}
    common = {"batch_size": settings.chunk, "task": task}
    if "deletion" in settings.metrics:
        out["deletion_curve"] = deletion_curve(model, images, maps, classes, steps=settings.steps,
                                               baseline=settings.deletion_baseline, **common)
        out["deletion"] = curve_auc(out["deletion_curve"])
    if "insertion" in settings.metrics:
        out["insertion_curve"] = insertion_curve(model, images, maps, classes, steps=settings.steps,
                                                 baseline=settings.insertion_baseline, **common)
        out["insertion"] = curve_auc(out["insertion_curve"])
    if "road" in settings.metrics:
        options = {"percentages": settings.road_percentages, "seed": settings.seed, **common}
        morf = road(model, images, maps, classes, order="morf", **options).mean(1)
        lerf = road(model, images, maps, classes, order="lerf", **options).mean(1)
        out.update(road=lerf - morf, road_morf=morf, road_lerf=lerf)
    return out


def faithfulness_scores(model: nn.Module, dataset, *, method: str, cache: MapCache,
                        reference: MapCache | None = None, settings: FaithfulnessSettings | None = None,
                        task: str = "multiclass", batch_size: int = 32,
                        device: torch.device | str = "cpu") -> FaithfulnessResult:
    """Deletion, insertion and ROAD of ``model``'s ``method`` maps on the reference's top-1 class of each image.

    Parameters
    ----------
    model : nn.Module
        The model measured (left on its device and in its mode afterwards).
    dataset : Dataset
        Items ``(image, label, ...)``.
    method : str
        The attribution method.
    cache : MapCache
        The model's cache: its maps of the pairs already explained (e.g. by the localization
        protocol) are read, not recomputed.
    reference : MapCache, optional
        The teacher's cache, whose top-1 class is explained; ``None``: the model's own top-1.
    settings : FaithfulnessSettings, optional
        Which metrics, and their steps and percentages.
    task : {"multiclass", "multilabel"}
        Softmax or sigmoid probabilities.
    batch_size, device
        Images per batch read from the dataset, and where to run.

    Returns
    -------
    FaithfulnessResult

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> from apkit import models
    >>> net = models.create("vgg_small", num_classes=3, input_size=32)
    >>> data = TensorDataset(torch.randn(2, 3, 32, 32), torch.tensor([0, 2]))
    >>> result = faithfulness_scores(net, data, method="gradcam", cache=MapCache(net),
    ...                              settings=FaithfulnessSettings(steps=4, road_percentages=(0.5,)))
    >>> sorted(result.values), result.values["deletion"].shape, result.curves["deletion"].shape
    (['deletion', 'insertion', 'road', 'road_lerf', 'road_morf'], torch.Size([2]), torch.Size([5]))
    """
    settings = (settings or FaithfulnessSettings()).checked()
    reference = cache if reference is None else reference
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    parts: dict[str, list[torch.Tensor]] = {"images": [], "classes": []}
    position = 0
    with evaluating(*{id(m): m for m in (model, reference.model)}.values(), device=device):
        for batch in loader:
            images = batch[0].to(device)
            index = torch.arange(position, position + len(images), device=device)
            position += len(images)
            with torch.no_grad():
                classes = reference.logits(index, images).argmax(1)
            pairs = torch.stack([torch.arange(len(images), device=device), classes], 1)
            maps = cache.maps(method, index, images, pairs)
            measured = _batch_measures(model, images, maps, classes, settings=settings, task=task)
            for name, values in {"images": index, "classes": classes, **measured}.items():
                parts.setdefault(name, []).append(values.detach().cpu())
    joined = {name: torch.cat(values) if values else torch.empty(0) for name, values in parts.items()}
    return FaithfulnessResult(
        images=joined.pop("images").long(), classes=joined.pop("classes").long(),
        curves={kind: joined.pop(f"{kind}_curve").double().mean(0) for kind in ("deletion", "insertion")
                if f"{kind}_curve" in joined},
        values={name: values.double() for name, values in joined.items()})


def stored_values(results: Mapping[str, FaithfulnessResult]) -> dict[str, dict[str, Any]]:
    """``{method: {"image": [...], "class": [...], metric: [...], "curves": {...}}}``: JSON-ready."""
    return {method: {"image": r.images.tolist(), "class": r.classes.tolist(),
                     **{name: [None if v != v else v for v in values.tolist()] for name, values in r.values.items()},
                     "curves": {kind: curve.tolist() for kind, curve in r.curves.items()}}
            for method, r in results.items()}
