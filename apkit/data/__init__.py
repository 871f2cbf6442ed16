"""Datasets: the embedded synthetic shapes and local copies of real datasets, behind one registry.

Every item is ``(image, label, mask)``: a normalised float image ``(3, H, W)``, a multi-hot float
label ``(C,)`` and a uint8 mask ``(H, W)`` with 0 = background, ``k + 1`` = class ``k`` and
255 = void or unknown.
"""

from __future__ import annotations

from apkit.data.synthetic import SyntheticShapes
from apkit.errors import DataError
from apkit.registry import Registry

DATASETS: Registry = Registry("dataset")
DATASETS.register("synthetic", SyntheticShapes,
                  help="embedded multi-label shapes with exact masks (no download); splits train/val/seg")


def create(name: str, *, split: str, root: str | None = None, **options):
    """Build the registered dataset ``name`` for ``split`` (real datasets need ``root``)."""
    factory = DATASETS.get(name)
    if name == "synthetic":
        if root is not None:
            raise DataError("the synthetic dataset is generated, it takes no root; use --data synthetic")
        return factory(split, **options)
    if root is None or str(root) == "":
        raise DataError(f"dataset {name!r} reads a local folder: pass it as '{name}:/path/to/root'")
    return factory(root, split=split, **options)


def from_spec(spec: str, *, split: str, **options):
    """Build a dataset from a CLI spec: ``"synthetic"``, ``"voc:ROOT"`` or ``"imagenet-seg:ROOT"``."""
    name, _, root = str(spec).partition(":")
    return create(name, split=split, root=root or None, **options)


__all__ = ["DATASETS", "SyntheticShapes", "create", "from_spec"]
