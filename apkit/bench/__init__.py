"""The paper's benchmark grid as one resumable run (``apkit bench``).

:func:`run_bench` runs a profile of :data:`PROFILES` (``resolve_profile`` applies overrides) and
writes ``results.json``, ``tables.md`` and ``figures/``.
"""

from apkit.bench.profiles import PROFILES, resolve_profile
from apkit.bench.runner import run_bench

__all__ = ["PROFILES", "resolve_profile", "run_bench"]
