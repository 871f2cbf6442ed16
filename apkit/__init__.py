"""apkit: attribution-preserving network compression.

Audit whether a compressed vision model still explains its predictions the way the
original did, and compress models so that it does.
"""

__version__ = "0.1.0"

from apkit.errors import ApkitError  # noqa: E402

__all__ = ["ApkitError", "__version__"]
