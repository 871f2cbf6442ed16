"""A student against its teacher, with confidence: paired differences on the same pairs and images.

* :func:`paired_values` and :func:`paired_difference` read a column of two per-pair tables
  (:class:`~apkit.evaluation.pairs.PairTable`) on the pairs both keep;
* :func:`compare_attribution` gives, on the pairs both models keep, the paired difference of the
  localization scores (AUC, pointing) and the student's similarity to the teacher (cosine, L2),
  each with a paired-bootstrap interval over images (:func:`apkit.metrics.statistics.paired_bootstrap`);
* :func:`compare_predictions` does the same for the predictive metrics on the classification set,
  all bootstrap resamples at once;
* :func:`compare_faithfulness` gives the paired per-image difference of deletion, insertion and
  ROAD on the same (image, class) pairs;
* :func:`per_class` and :func:`most_changed` break the tables down by class and pick the pairs
  whose maps changed most.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from apkit.evaluation.pairs import PairTable
from apkit.metrics.classification import (
    f1_samples,
    per_image_average_precision,
    top1_accuracy,
    top1_agreement,
    topk_accuracy,
)
from apkit.metrics.localization import per_class_mean
from apkit.metrics.statistics import (
    bootstrap_counts,
    paired_bootstrap,
    percentile_interval,
    weighted_average_precision,
)

__all__ = ["SCORE_COLUMNS", "compare_attribution", "compare_faithfulness", "compare_predictions", "most_changed",
           "paired_difference", "paired_values", "per_class", "score_columns"]


def score_columns(tolerances: Sequence[int]) -> dict[str, str]:
    """The localization scores compared between two models and their per-pair columns:
    ``{"auc": "auc", "pointing": "hit", "pointing@t": "hit@t" for every tolerance after the first}``."""
    return {"auc": "auc", "pointing": "hit", **{f"pointing@{t}": f"hit@{t}" for t in tolerances[1:]}}


SCORE_COLUMNS = score_columns((0,))


def paired_values(a: PairTable, b: PairTable, column: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``column`` of ``a`` and of ``b`` on the pairs both keep (value defined in both), and the pairs' images.

    Examples
    --------
    >>> a = PairTable.from_dict({"image": [0, 0, 1], "class": [1, 2, 1], "auc": [0.9, 0.8, None]})
    >>> b = PairTable.from_dict({"image": [0, 1, 1], "class": [1, 1, 3], "auc": [0.6, 0.9, 0.5]})
    >>> [t.tolist() for t in paired_values(a, b, "auc")]
    [[0.9], [0.6], [0]]
    """
    in_a, in_b = a.common(b, column=column)
    return a.column(column)[in_a], b.column(column)[in_b], a.column("image")[in_a]


def paired_difference(a: PairTable, b: PairTable, column: str) -> tuple[float, int]:
    """Mean of ``column`` for model ``a`` minus its mean for model ``b`` over the pairs both keep.

    Returns the difference (NaN without a common pair) and the number of common pairs.

    Examples
    --------
    >>> a = PairTable.from_dict({"image": [0, 0, 1], "class": [1, 2, 1], "kept": [True, True, True],
    ...                          "auc": [0.9, 0.8, 0.7]})
    >>> b = PairTable.from_dict({"image": [0, 1, 1], "class": [1, 1, 3], "kept": [True, False, True],
    ...                          "auc": [0.6, 0.9, 0.5]})
    >>> paired_difference(a, b, "auc")  # only (0, 1) is kept by both
    (0.30000000000000004, 1)
    """
    ours, theirs, _ = paired_values(a, b, column)
    if not len(ours):
        return math.nan, 0
    return float(ours.mean() - theirs.mean()), len(ours)


def compare_attribution(student: PairTable, teacher: PairTable, *, tolerances: Sequence[int],
                        resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The student's localization scores minus the teacher's on the pairs both keep, and its similarity.

    Returns ``{"auc": interval, "pointing": ..., "pointing@t": ..., "cos": ..., "l2": ...,
    "common_pairs": n}``, each interval a dict ``estimate, low, high`` (differences for the scores,
    means for cos and l2 over the student's compared pairs).
    """
    options = {"resamples": resamples, "confidence": confidence, "seed": seed}
    result: dict[str, Any] = {}
    for name, column in score_columns(tolerances).items():
        ours, theirs, images = paired_values(student, teacher, column)
        result[name] = paired_bootstrap(ours - theirs, images, **options).to_dict()
        if name == "auc":
            result["common_pairs"] = len(ours)
    images = student.column("image")
    for name in ("cos", "l2"):
        result[name] = paired_bootstrap(student.column(name), images, **options).to_dict()
    return result


def _per_image(logits: torch.Tensor, labels: torch.Tensor, task: str) -> dict[str, torch.Tensor]:
    if task == "multiclass":
        return {"top1": top1_accuracy(logits, labels).double(), "top5": topk_accuracy(logits, labels, 5).double()}
    return {"map_image": per_image_average_precision(logits, labels).double(),
            "f1": f1_samples(logits, labels).double()}


def compare_predictions(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                        task: str, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
                        ) -> dict[str, dict[str, float]]:
    """The student's predictive metrics minus the teacher's on the same images, with bootstrap intervals.

    Multi-label: ``map_image`` (the paper's per-image mAP), ``map_class`` (per-class mAP) and ``f1``;
    single-label: ``top1`` and ``top5``, and ``agreement``, the share of images on which the
    student's top-1 class is the teacher's (a value, not a difference).  One resample draws the
    images with replacement and scores both models on the draw
    (:func:`~apkit.metrics.statistics.bootstrap_counts`, the same draws for every metric).
    """
    count = len(labels)
    counts = bootstrap_counts(count, resamples=resamples, seed=seed, device=labels.device)
    student, teacher = _per_image(student_logits, labels, task), _per_image(teacher_logits, labels, task)
    differences = {name: student[name] - teacher[name] for name in student}
    if task == "multiclass":
        differences["agreement"] = top1_agreement(student_logits, teacher_logits).double()
    result = {}
    for name, difference in differences.items():
        valid = ~torch.isnan(difference)
        weights = counts[:, valid]
        statistics = (weights * difference[valid]).sum(1) / weights.sum(1)
        low, high = percentile_interval(statistics, confidence=confidence)
        result[name] = {"estimate": float(difference[valid].mean()) if valid.any() else math.nan,
                        "low": low, "high": high}
    if task != "multiclass":
        result["map_class"] = _per_class_map_difference(student_logits, teacher_logits, labels, counts=counts,
                                                       confidence=confidence)
    return result


def _per_class_map_difference(student_logits, teacher_logits, labels, *, counts, confidence) -> dict[str, float]:
    """Per-class mAP of the student minus the teacher's, under every resample's image counts."""
    present = labels.sum(0) > 0
    full = torch.ones(1, len(labels), dtype=torch.float64, device=labels.device)

    def mean_ap(logits, weights):
        # One pass per class, each vectorised over images and resamples: the columns sort differently.
        aps = torch.stack([weighted_average_precision(logits[:, c], labels[:, c], weights)
                           for c in present.nonzero().squeeze(1).tolist()], 1)  # one column per class
        return torch.nanmean(aps, 1)

    estimate = float(mean_ap(student_logits, full) - mean_ap(teacher_logits, full))
    low, high = percentile_interval(mean_ap(student_logits, counts) - mean_ap(teacher_logits, counts),
                                    confidence=confidence)
    return {"estimate": estimate, "low": low, "high": high}


def per_class(pairs: PairTable, classes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Kept pairs, mean AUC, pointing and cosine per class of one model's per-pair table."""
    kept = pairs.column("kept")
    klass = pairs.column("class")[kept]
    if not len(klass):
        return []
    size = int(klass.max()) + 1
    counts = torch.bincount(klass, minlength=size)
    means = {name: per_class_mean(pairs.column(column)[kept], klass, num_classes=size)
             for name, column in (("auc", "auc"), ("pointing", "hit"), ("cos", "cos"))}
    return [{"class": classes[c] if classes is not None and c < len(classes) else str(c), "kept": int(counts[c]),
             **{name: float(values[c]) for name, values in means.items()}}
            for c in counts.nonzero().squeeze(1).tolist()]


def most_changed(pairs: PairTable, k: int = 6) -> list[dict[str, Any]]:
    """The ``k`` pairs whose map is least like the teacher's (lowest cosine): image, class, cos, auc."""
    cos = pairs.column("cos")
    order = torch.argsort(torch.nan_to_num(cos, nan=math.inf))[:k]
    order = order[~torch.isnan(cos[order])]
    images, classes, auc = pairs.column("image"), pairs.column("class"), pairs.column("auc")
    return [{"image": int(images[i]), "class": int(classes[i]), "cos": float(cos[i]), "auc": float(auc[i])}
            for i in order.tolist()]


def compare_faithfulness(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                         images: torch.Tensor, *, resamples: int = 1000, confidence: float = 0.95,
                         seed: int = 0) -> dict[str, dict[str, float]]:
    """The student's per-image faithfulness minus the teacher's on the same (image, class) pairs.

    ``student`` and ``teacher`` map each metric (``deletion``, ``insertion``, ``road``) to its
    ``(N,)`` values on the same images (``images``, their dataset indices); each difference
    gets a paired bootstrap interval over images.

    Examples
    --------
    >>> images = torch.arange(3)
    >>> out = compare_faithfulness({"deletion": torch.tensor([0.3, 0.2, 0.4])},
    ...                            {"deletion": torch.tensor([0.1, 0.2, 0.3])}, images, resamples=10)
    >>> round(out["deletion"]["estimate"], 4)
    0.1
    """
    options = {"resamples": resamples, "confidence": confidence, "seed": seed}
    return {name: paired_bootstrap(student[name] - teacher[name], images, **options).to_dict()
            for name in ("deletion", "insertion", "road") if name in student and name in teacher}
