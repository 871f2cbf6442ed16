"""Attribution-matching regularizers: EWA, SWA and SSWA as one loss family.

Examples
--------
>>> from apkit.regularizers import REGULARIZERS
>>> REGULARIZERS.names()
['ewa', 'swa', 'sswa']
>>> REGULARIZERS.get("sswa")()
AttributionMatchingLoss(kind='sswa', weight=50.0, drop=0.3)
"""

from __future__ import annotations

import functools

from apkit.registry import Registry
from apkit.regularizers.matching import (
    DEFAULT_DROP,
    DEFAULT_WEIGHTS,
    KINDS,
    AttributionMatchingLoss,
    TeacherPass,
    ewa_map,
    matching_distance,
    swa_map,
)

REGULARIZERS: Registry = Registry("regularizer")
_HELP = {
    "ewa": "equally weighted: match mean_k A_k^2 at the matching layer (lambda 100)",
    "swa": "sensitivity weighted: match ReLU(sum_k alpha_k A_k) for the teacher's top-1 class (lambda 50)",
    "sswa": "stochastic SWA: SWA with 30% of the teacher's channels left out per batch (lambda 50)",
}
for _kind in KINDS:
    REGULARIZERS.register(_kind, functools.partial(AttributionMatchingLoss, _kind), help=_HELP[_kind])


def create(kind: str, **options) -> AttributionMatchingLoss:
    """Build the regularizer registered as ``kind`` (``"ewa"``, ``"swa"``, ``"sswa"``) with ``options``."""
    return REGULARIZERS.get(kind)(**options)


__all__ = [
    "DEFAULT_DROP", "DEFAULT_WEIGHTS", "KINDS", "REGULARIZERS", "AttributionMatchingLoss", "TeacherPass",
    "create", "ewa_map", "matching_distance", "swa_map",
]
