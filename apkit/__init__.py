"""apkit: attribution-preserving network compression.

Audit whether a compressed vision model still explains its predictions the way the
original did, and compress models so that it does.
"""

__version__ = "0.1.0"

from apkit.errors import ApkitError  # noqa: E402

# The top-level API lives in sub-packages; import them only when used, so `import apkit` stays light.
_LAZY = {"explain": "apkit.attribution", "audit": "apkit.audit", "AuditReport": "apkit.audit"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'apkit' has no attribute {name!r}")


__all__ = ["ApkitError", "__version__", *_LAZY]
