"""apkit: attribution-preserving network compression.

Audit whether a compressed vision model still explains its predictions the way the
original did, and compress models so that it does.
"""

__version__ = "0.1.0"

# The top-level API.  Importing the function over the submodule of the same name binds
# `apkit.audit` to the function for good (a later `import apkit.audit` does not rebind it).
from apkit.attribution import explain  # noqa: E402
from apkit.audit import AuditReport, audit  # noqa: E402
from apkit.errors import ApkitError  # noqa: E402

__all__ = ["ApkitError", "AuditReport", "__version__", "audit", "explain"]
