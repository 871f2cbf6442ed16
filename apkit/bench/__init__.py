"""The paper's benchmark grid as one resumable run (``apkit bench``)."""

from apkit.bench.profiles import PROFILES, resolve_profile

__all__ = ["PROFILES", "resolve_profile", "run_bench"]


def __getattr__(name):
    if name == "run_bench":  # keep `import apkit.bench` light: the runner pulls in every sub-package
        from apkit.bench.runner import run_bench

        return run_bench
    raise AttributeError(f"module 'apkit.bench' has no attribute {name!r}")
