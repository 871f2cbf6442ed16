"""apkit: attribution-preserving network compression.

Audit whether a compressed vision model still explains its predictions the way the
original did, and compress models so that it does.
"""

import sys

from apkit import _compat, evaluation, metrics
from apkit._version import __version__
from apkit.attribution import explain
from apkit.errors import ApkitError
from apkit.evaluation import AuditReport, audit

__all__ = ["ApkitError", "AuditReport", "__version__", "audit", "explain"]


def _keep_old_names() -> None:
    """Names the documentation used before evaluation moved out of apkit.metrics; kept for one release."""
    moved = ("LocalizationResult", "LocalizationTotals", "RoarResult", "localization_scores", "plot_roar", "roar")
    metrics.__getattr__ = _compat.deprecated_attributes(
        "apkit.metrics", {name: (f"apkit.evaluation.{name}", lambda name=name: getattr(evaluation, name))
                          for name in moved})
    _compat.deprecated_module("apkit.audit", "apkit.evaluation", lambda: sys.modules["apkit.evaluation.audit"])


_keep_old_names()
