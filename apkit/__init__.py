"""apkit: attribution-preserving network compression.

Audit whether a compressed vision model still explains its predictions the way the
original did, and compress models so that it does.
"""

from apkit.attribution import explain
from apkit.core.errors import ApkitError
from apkit.core.version import __version__
from apkit.evaluation import AuditReport, audit

__all__ = ["ApkitError", "AuditReport", "__version__", "audit", "explain"]
