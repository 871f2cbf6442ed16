"""Evaluation: drive models over datasets and score what they attribute.

* :func:`localization_scores` -- the paper's localization protocol (METHOD §4.2): every selected
  (image, class) pair's map against its mask (ROC-AUC, pointing game) and against the teacher's
  map (cosine, normalised L2);
* :func:`roar` -- RemOve And Retrain (supplement E), with :func:`plot_roar`;
* :func:`deletion`, :func:`insertion` and :func:`road` -- faithfulness without retraining, batched on
  the device (:mod:`apkit.evaluation.faithfulness`), and :func:`randomization_test`, the cascading
  randomisation sanity check (:mod:`apkit.evaluation.randomization`), all named in
  :data:`FAITHFULNESS_METRICS`;
* :func:`audit` / :func:`audit_model` -- a teacher and its compressed students, every metric, as an
  :class:`AuditReport`; :func:`audit_checkpoints` does the same from files, as ``apkit audit``;
* :class:`PairTable` -- the per-(image, class) table every step reads (:mod:`apkit.evaluation.pairs`),
  and :mod:`apkit.evaluation.tables`, the one renderer of the report's and the benchmark's tables.

The metrics themselves are pure functions of tensors in :mod:`apkit.metrics`.

Examples
--------
>>> from apkit.evaluation import audit, localization_scores, roar
"""

from apkit.evaluation.audit import AuditReport, AuditSettings, ModelAudit, audit, audit_model
from apkit.evaluation.faithfulness import (
    FAITHFULNESS_METRICS,
    deletion,
    deletion_curve,
    insertion,
    insertion_curve,
    road,
)
from apkit.evaluation.localization import (
    LocalizationResult,
    LocalizationSettings,
    LocalizationTotals,
    localization_scores,
)
from apkit.evaluation.maps import MapCache
from apkit.evaluation.pairs import PairTable
from apkit.evaluation.pipeline import audit_checkpoints
from apkit.evaluation.randomization import RandomizationResult, randomization_test
from apkit.evaluation.report import Gate, parse_gates
from apkit.evaluation.roar import RemovedPixels, RoarResult, plot_roar, roar, roar_maps

__all__ = [
    "FAITHFULNESS_METRICS", "AuditReport", "AuditSettings", "Gate", "LocalizationResult", "LocalizationSettings",
    "LocalizationTotals", "MapCache", "ModelAudit", "PairTable", "RandomizationResult", "RemovedPixels",
    "RoarResult", "audit",
    "audit_checkpoints", "audit_model", "deletion", "deletion_curve", "insertion", "insertion_curve",
    "localization_scores", "parse_gates", "plot_roar", "randomization_test", "road", "roar", "roar_maps",
]
