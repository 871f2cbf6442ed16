"""Metrics over batched tensors: classification, localization against masks, map similarity.

Every metric takes batched tensors and returns one value per item (per image, map or pair),
on the input's device, NaN where the value is undefined; averaging is a separate, explicit step
(``torch.nanmean``, :func:`per_class_mean`, :func:`class_averaged`).  :data:`METRICS` lists them
by name for the API and the CLI (``apkit list``).

They are pure functions of tensors: they import torch and apkit's core only.  What drives
models over datasets (the paper's localization protocol, ROAR, the audit) is
:mod:`apkit.evaluation`.

Examples
--------
>>> import torch
>>> from apkit import metrics
>>> maps = torch.tensor([[[0.1, 0.4], [0.35, 0.8]]])
>>> masks = torch.tensor([[[0, 0], [1, 1]]])
>>> metrics.METRICS.get("roc_auc")(maps, masks)
tensor([0.7500], dtype=torch.float64)
"""

from __future__ import annotations

from apkit.core.registry import Registry
from apkit.metrics.classification import (
    f1_samples,
    per_class_average_precision,
    per_image_average_precision,
    top1_accuracy,
    top1_agreement,
    topk_accuracy,
)
from apkit.metrics.localization import (
    class_averaged,
    normalize_maps,
    per_class_mean,
    pointing_game,
    relevance_mass,
    roc_auc,
)
from apkit.metrics.similarity import cosine_similarity, normalized_l2

METRICS: Registry = Registry("metric")
METRICS.register("roc_auc", roc_auc,
                 help="ROC-AUC of a map's pixels against a mask (= scikit-learn roc_curve + auc), per map")
METRICS.register("pointing_game", pointing_game,
                 help="1 if the map's arg-max lies on the mask (optional TorchRay pixel tolerance), per map")
METRICS.register("relevance_mass", relevance_mass,
                 help="share of a map's positive relevance inside the mask (Arras et al.), per map")
METRICS.register("cosine_similarity", cosine_similarity, help="cosine similarity of two maps, per pair")
METRICS.register("normalized_l2", normalized_l2,
                 help="L2 distance of two maps scaled to unit norm (supplement C.3), per pair")
METRICS.register("per_image_average_precision", per_image_average_precision,
                 help="AP of each image over its classes; its mean is the paper's 'mAP'")
METRICS.register("per_class_average_precision", per_class_average_precision,
                 help="AP of each class over the images; its mean is the usual VOC mAP")
METRICS.register("f1_samples", f1_samples, help="F1 of each image's thresholded scores (logits >= 0.5)")
METRICS.register("top1_accuracy", top1_accuracy, help="1 where the arg-max logit is the target, per image")

__all__ = [
    "METRICS",
    "class_averaged",
    "cosine_similarity",
    "f1_samples",
    "normalize_maps",
    "normalized_l2",
    "per_class_average_precision",
    "per_class_mean",
    "per_image_average_precision",
    "pointing_game",
    "relevance_mass",
    "roc_auc",
    "top1_accuracy",
    "top1_agreement",
    "topk_accuracy",
]
