"""Datasets: the embedded synthetic shapes, PASCAL VOC 2012, ImageNet with object masks, your own folder.

Every dataset yields ``(image, label, mask)``: image float32 ``(3, H, W)`` normalised; label
float32 ``(C,)`` (multi-hot, or one-hot for a multiclass task); mask uint8 ``(H, W)`` with
0 = background, ``k + 1`` = class ``k``, 255 = void or unknown.  Datasets carry ``classes``,
``num_classes``, ``task`` ("multilabel" or "multiclass"), ``mean``, ``std`` and ``image_size``,
and ``deterministic`` (True when an index always gives the same item, i.e. no random
augmentation: compression then computes the teacher's outputs once per image).

Examples
--------
>>> from apkit import data
>>> data.DATASETS.names()
['synthetic', 'voc', 'imagenet-seg', 'folder', 'imagefolder']
>>> val = data.from_spec("synthetic", split="val", num_samples=8)
>>> len(val), val.classes[:3], val[0][2].dtype
(8, ('circle', 'square', 'triangle'), torch.uint8)

Your own labelled images in torchvision's ImageFolder layout (``ROOT/train/<class>/*.jpg``,
``ROOT/val/...``, ``ROOT/test/...``, optional masks under ``ROOT/masks/<split>/``) are the
``"imagefolder"`` dataset: ``from_spec("imagefolder:ROOT", split="train", image_size=64)`` (layout
in :mod:`apkit.data.imagefolder`).  Its items carry the same ``(image, label, mask)``; an image
without a mask has an all-255 (unknown) mask.  For the reports it exposes ``classes`` (the class
names) and ``sample_names`` (each image's path in its split, ``"cat/img_001.jpg"``), and
``has_mask`` per image.  Images with masks and no labels of your own are the ``"folder"`` dataset,
an evaluation set (split ``"seg"``): ``from_spec("folder:ROOT", split="seg")`` (layout in
:mod:`apkit.data.folder`).

Every dataset read from files takes ``image_size``, ``mean`` and ``std``
(:data:`INPUT_OPTIONS`): the input a model was trained on.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from torch.utils.data import Dataset

from apkit.core.errors import DataError, ValidationError
from apkit.core.registry import Registry
from apkit.core.validation import check_choice
from apkit.data.folder import SegmentationFolder
from apkit.data.imagefolder import ImageFolderData
from apkit.data.imagenet_seg import ImageNetSeg
from apkit.data.synthetic import CLASSES as SHAPE_CLASSES
from apkit.data.synthetic import SyntheticShapes, generate_shapes
from apkit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC_MEAN,
    VOC_STD,
    PairTransform,
    imagenet_transform,
    voc_transform,
)
from apkit.data.voc import VOC2012, VOC_CLASSES

DATASETS: Registry = Registry("dataset")
DATASETS.register("synthetic", SyntheticShapes,
                  help="embedded 8-class shapes with exact masks, generated from a seed (splits train/val/seg)")
DATASETS.register("voc", VOC2012,
                  help="PASCAL VOC 2012 from a local folder (train/val classification, seg = 1,449 masks)")
DATASETS.register("imagenet-seg", ImageNetSeg,
                  help="ImageNet folders (train/val) and images with object masks (seg, top-1 protocol)")
DATASETS.register("folder", SegmentationFolder,
                  help="your images: ROOT/images/NAME.jpg|png, ROOT/masks/NAME.png (0 background, k = line k of "
                       "ROOT/classes.txt, 255 ignored); split seg only; options image_size [224], mean/std "
                       "[ImageNet's]")
DATASETS.register("imagefolder", ImageFolderData,
                  help="your labelled images in torchvision's ImageFolder layout: ROOT/{train,val,test}/<class>/*.jpg "
                       "(splits where present), optional masks ROOT/masks/<split>/<class>/<name>.png (nonzero = "
                       "object); options image_size [224], mean/std [ImageNet's], augment [false]")

#: The options that say how a model sees its input, taken by every dataset read from files.
INPUT_OPTIONS = ("image_size", "mean", "std")

# Per dataset: its splits, and for a real one how a spec names its folder.
_SPLITS = {"synthetic": ("train", "val", "seg"), "voc": ("train", "val", "seg"),
           "imagenet-seg": ("train", "val", "seg"), "folder": ("seg",), "imagefolder": ("train", "val", "test", "seg")}
_ROOT_EXAMPLE = {"voc": "voc:/path/to/VOCdevkit", "imagenet-seg": "imagenet-seg:/path/to/imagenet",
                 "folder": "folder:/path/to/my-images", "imagefolder": "imagefolder:/path/to/my-images"}
# Why a dataset lacks a split, where "unknown split" would not say.
_NO_SPLIT = {"folder": "it is an evaluation set with masks and serves split 'seg' only (apkit audit --data "
                       "folder:ROOT); train and compress on imagefolder:ROOT (ROOT/train/<class>/*.jpg)",
             "imagefolder": "its splits are the folders train/, val/ and test/ under ROOT (seg: test/ if present, "
                            "else val/); masks, where some images have them, sit in ROOT/masks/<split>/"}


def create(name: str, *, split: str, root: str | Path | None = None, **options) -> Dataset:
    """Build the registered dataset ``name`` for ``split``.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` ("synthetic", "voc", "imagenet-seg", "folder", "imagefolder").
    split : str
        "train", "val" or "seg" (the held-out set with segmentation masks); "folder" has "seg" only,
        "imagefolder" "train", "val", "test" and "seg" (its held-out split: ``test/``, else ``val/``).
    root : str or Path, optional
        Folder of a real dataset; the synthetic data is generated and takes none.
    **options
        Dataset options, e.g. ``num_samples``, ``image_size``, ``seed`` (synthetic), ``void``
        (VOC) or ``image_size``, ``mean``, ``std`` (every dataset read from files).

    Returns
    -------
    torch.utils.data.Dataset
        Items ``(image, label, mask)``; attributes ``classes``, ``num_classes``, ``task``, ``mean``,
        ``std``, ``image_size``.

    Examples
    --------
    >>> create("synthetic", split="seg", num_samples=2).split
    'seg'
    """
    factory = DATASETS.get(name)
    if name in _NO_SPLIT and split not in _SPLITS[name]:
        raise DataError(f"dataset {name!r} has no split {split!r}: {_NO_SPLIT[name]}")
    check_choice(split, f"split of dataset {name!r}", _SPLITS.get(name, ("train", "val", "seg")))
    accepted = [p for p in inspect.signature(factory).parameters if p not in ("root", "split")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValidationError(f"dataset {name!r} does not take options {unknown}; it takes: {', '.join(accepted)}")
    if name in _ROOT_EXAMPLE:
        if root is None or not str(root).strip():
            raise DataError(f"dataset {name!r} reads a local folder: pass its root, e.g. "
                            f"\"{_ROOT_EXAMPLE[name]}\" (or root=... in the API)")
        return factory(root, split, **options)
    if root is not None:
        raise ValidationError(f"dataset {name!r} is generated, not read from a folder; drop root={str(root)!r}")
    return factory(split, **options)


def spec_name(spec: str) -> str:
    """The dataset name of a spec: ``"voc:/data"`` -> ``"voc"``."""
    return str(spec).strip().partition(":")[0]


def check_synthetic_only(spec: str, **options) -> None:
    """Refuse options that only the generated data has (``num_samples``, ``image_size``, ...) for a real dataset.

    ``options`` maps each option's name to its value; ``None`` means "not given".

    Examples
    --------
    >>> check_synthetic_only("synthetic", train_samples=100)
    >>> check_synthetic_only("voc:/data", train_samples=None)
    """
    given = [name for name, value in options.items() if value is not None]
    if given and spec_name(spec) != "synthetic":
        verb = "apply" if len(given) > 1 else "applies"
        raise ValidationError(f"{' and '.join(given)} {verb} only to the synthetic data, not to {spec!r}; "
                              "drop them or use data='synthetic'")


def from_spec(spec: str, *, split: str, **options) -> Dataset:
    """Build a dataset from a spec: ``"synthetic"``, ``"voc:ROOT"``, ``"imagenet-seg:ROOT"``, ``"folder:ROOT"`` or
    ``"imagefolder:ROOT"``.

    Examples
    --------
    >>> from_spec("synthetic", split="train", num_samples=3).num_samples
    3
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValidationError(f"dataset spec must be a string like 'synthetic' or 'voc:/path/to/VOCdevkit', "
                              f"got {spec!r}")
    name, sep, root = spec.strip().partition(":")
    DATASETS.get(name)
    if sep and not root.strip():
        hint = _ROOT_EXAMPLE.get(name, name)
        raise DataError(f"dataset spec {spec!r} names no folder after ':'; write e.g. \"{hint}\"")
    return create(name, split=split, root=root if sep else None, **options)


__all__ = [
    "INPUT_OPTIONS", "ImageFolderData",
    "DATASETS", "check_synthetic_only", "create", "from_spec", "spec_name", "SyntheticShapes", "generate_shapes",
    "SHAPE_CLASSES", "VOC2012", "VOC_CLASSES", "ImageNetSeg", "SegmentationFolder", "PairTransform", "voc_transform",
    "imagenet_transform", "VOC_MEAN", "VOC_STD", "IMAGENET_MEAN", "IMAGENET_STD",
]
