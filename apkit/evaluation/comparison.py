"""A student against its teacher, with confidence: paired differences on the same pairs and images.

* :func:`common_pairs` joins two per-pair tables of the localization protocol on (image, class);
* :func:`compare_attribution` gives, on the pairs both models keep, the paired difference of the
  localization scores (AUC, pointing) and the student's similarity to the teacher (cosine, L2),
  each with a paired-bootstrap interval over images (:func:`apkit.metrics.statistics.paired_bootstrap`);
* :func:`compare_predictions` does the same for the predictive metrics on the classification set,
  all bootstrap resamples at once;
* :func:`per_class` and :func:`most_changed` break the tables down by class and pick the pairs
  whose maps changed most.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from apkit.metrics.classification import f1_samples, per_image_average_precision, top1_accuracy
from apkit.metrics.localization import per_class_mean
from apkit.metrics.statistics import (
    bootstrap_counts,
    paired_bootstrap,
    percentile_interval,
    weighted_average_precision,
)

__all__ = ["common_pairs", "compare_attribution", "compare_predictions", "most_changed", "pair_column", "per_class"]

_KEY_SPAN = 1 << 20  # pair key = image * span + class


def pair_column(pairs: Mapping[str, list], name: str, dtype=torch.float64) -> torch.Tensor:
    """One column of a per-pair table as a tensor (float64 with NaN for missing values, unless ``dtype``)."""
    values = pairs[name]
    if dtype == torch.float64:
        return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=dtype)
    return torch.tensor(values, dtype=dtype)


def common_pairs(a: Mapping[str, list], b: Mapping[str, list], *, column: str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions in ``a`` and ``b`` of the pairs both keep (with ``column`` defined in both), and their images.

    Examples
    --------
    >>> a = {"image": [0, 0, 1], "class": [1, 2, 1], "kept": [True, True, True], "auc": [0.9, 0.8, None]}
    >>> b = {"image": [0, 1, 1], "class": [1, 1, 3], "kept": [True, True, True], "auc": [0.6, 0.9, 0.5]}
    >>> [t.tolist() for t in common_pairs(a, b, column="auc")]
    [[0], [0], [0]]
    """

    def usable(pairs):
        keys = pair_column(pairs, "image", torch.int64) * _KEY_SPAN + pair_column(pairs, "class", torch.int64)
        keep = pair_column(pairs, "kept", torch.bool)
        if column is not None:
            keep &= ~torch.isnan(pair_column(pairs, column))
        where = keep.nonzero().squeeze(1)
        return keys[where], where

    keys_a, where_a = usable(a)
    keys_b, where_b = usable(b)
    order_b = torch.argsort(keys_b)
    sorted_b = keys_b[order_b]
    position = torch.searchsorted(sorted_b, keys_a).clamp(max=max(len(sorted_b) - 1, 0))
    hit = sorted_b[position] == keys_a if len(sorted_b) else torch.zeros(len(keys_a), dtype=torch.bool)
    in_a, in_b = where_a[hit], where_b[order_b[position[hit]]]
    return in_a, in_b, pair_column(a, "image", torch.int64)[in_a]


def compare_attribution(student: Mapping[str, list], teacher: Mapping[str, list], *, tolerances: Sequence[int],
                        resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The student's localization scores minus the teacher's on the pairs both keep, and its similarity.

    Returns ``{"auc": interval, "pointing": ..., "pointing@t": ..., "cos": ..., "l2": ...,
    "common_pairs": n}``, each interval a dict ``estimate, low, high`` (differences for the scores,
    means for cos and l2 over the student's compared pairs).
    """
    options = {"resamples": resamples, "confidence": confidence, "seed": seed}
    columns = {"auc": "auc", "pointing": "hit", **{f"pointing@{t}": f"hit@{t}" for t in tolerances[1:]}}
    result: dict[str, Any] = {}
    for name, column in columns.items():
        in_s, in_t, images = common_pairs(student, teacher, column=column)
        difference = pair_column(student, column)[in_s] - pair_column(teacher, column)[in_t]
        result[name] = paired_bootstrap(difference, images, **options).to_dict()
        if name == "auc":
            result["common_pairs"] = len(in_s)
    images = pair_column(student, "image", torch.int64)
    for name in ("cos", "l2"):
        result[name] = paired_bootstrap(pair_column(student, name), images, **options).to_dict()
    return result


def _per_image(logits: torch.Tensor, labels: torch.Tensor, task: str) -> dict[str, torch.Tensor]:
    if task == "multiclass":
        return {"top1": top1_accuracy(logits, labels).double()}
    return {"map_image": per_image_average_precision(logits, labels).double(),
            "f1": f1_samples(logits, labels).double()}


def compare_predictions(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                        task: str, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
                        ) -> dict[str, dict[str, float]]:
    """The student's predictive metrics minus the teacher's on the same images, with bootstrap intervals.

    Multi-label: ``map_image`` (the paper's per-image mAP), ``map_class`` (per-class mAP) and ``f1``;
    single-label: ``top1``.  One resample draws the images with replacement and scores both models
    on the draw (:func:`~apkit.metrics.statistics.bootstrap_counts`, the same draws for every metric).
    """
    count = len(labels)
    counts = bootstrap_counts(count, resamples=resamples, seed=seed, device=labels.device)
    student, teacher = _per_image(student_logits, labels, task), _per_image(teacher_logits, labels, task)
    result = {}
    for name in student:
        difference = student[name] - teacher[name]
        valid = ~torch.isnan(difference)
        weights = counts[:, valid]
        statistics = (weights * difference[valid]).sum(1) / weights.sum(1)
        low, high = percentile_interval(statistics, confidence=confidence)
        result[name] = {"estimate": float(difference[valid].mean()) if valid.any() else math.nan,
                        "low": low, "high": high}
    if task != "multiclass":
        result["map_class"] = _per_class_map_difference(student_logits, teacher_logits, labels, counts, confidence)
    return result


def _per_class_map_difference(student_logits, teacher_logits, labels, counts, confidence) -> dict[str, float]:
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


def per_class(pairs: Mapping[str, list], classes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Kept pairs, mean AUC, pointing and cosine per class of one model's per-pair table."""
    kept = pair_column(pairs, "kept", torch.bool)
    klass = pair_column(pairs, "class", torch.int64)[kept]
    if not len(klass):
        return []
    size = int(klass.max()) + 1
    counts = torch.bincount(klass, minlength=size)
    means = {name: per_class_mean(pair_column(pairs, column)[kept], klass, num_classes=size)
             for name, column in (("auc", "auc"), ("pointing", "hit"), ("cos", "cos"))}
    return [{"class": classes[c] if classes is not None and c < len(classes) else str(c), "kept": int(counts[c]),
             **{name: float(values[c]) for name, values in means.items()}}
            for c in counts.nonzero().squeeze(1).tolist()]


def most_changed(pairs: Mapping[str, list], k: int = 6) -> list[dict[str, Any]]:
    """The ``k`` pairs whose map is least like the teacher's (lowest cosine): image, class, cos, auc."""
    cos = pair_column(pairs, "cos")
    order = torch.argsort(torch.nan_to_num(cos, nan=math.inf))[:k]
    order = order[~torch.isnan(cos[order])]
    return [{"image": int(pairs["image"][i]), "class": int(pairs["class"][i]), "cos": float(cos[i]),
             "auc": float(pair_column(pairs, "auc")[i])} for i in order.tolist()]
