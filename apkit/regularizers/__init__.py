"""Attribution-matching regularizers: EWA, SWA and SSWA as one loss family.

Examples
--------
>>> from apkit.regularizers import REGULARIZERS
>>> REGULARIZERS.names()
['ewa', 'swa', 'sswa']
>>> REGULARIZERS.get("sswa")()
AttributionMatchingLoss(regularizer='sswa', weight=50.0, drop=0.3)
"""

from __future__ import annotations

import functools

from apkit.core.names import PAPER_DROP, PAPER_WEIGHTS, REGULARIZER_NAMES
from apkit.core.registry import Registry
from apkit.regularizers.matching import (
    AttributionMatchingLoss,
    TeacherEvidence,
    TeacherPass,
    ewa_map,
    matching_distance,
    scaled_weight,
    swa_map,
)

REGULARIZERS: Registry = Registry("regularizer")
_HELP = {
    "ewa": "equally weighted: match mean_k A_k^2 at the matching layer",
    "swa": "sensitivity weighted: match ReLU(sum_k alpha_k A_k) for the teacher's top-1 class",
    "sswa": f"stochastic SWA: SWA with {PAPER_DROP:.0%} of the teacher's channels left out per batch",
}
for _name in REGULARIZER_NAMES:
    REGULARIZERS.register(_name, functools.partial(AttributionMatchingLoss, _name),
                          help=f"{_HELP[_name]} (lambda {PAPER_WEIGHTS[_name]:g})")


__all__ = ["REGULARIZERS", "AttributionMatchingLoss", "TeacherEvidence", "TeacherPass", "ewa_map",
           "matching_distance", "scaled_weight", "swa_map"]
