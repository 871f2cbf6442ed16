"""PASCAL VOC 2012 from a local folder: the paper's classification splits and segmentation set.

Splits
------
``"train"`` / ``"val"``
    ``ImageSets/Main/{train,val}.txt``; the label is the 20-class multi-hot vector of the XML
    annotation's objects (difficult objects included); there is no mask, so the mask is all 255.
``"seg"``
    The 1,449 images of ``ImageSets/Segmentation/val.txt`` with their ``SegmentationClass`` PNGs.
    The PNG indices are VOC class ids (0 background, 1..20 the classes, 255 void); the mask is
    resized with NEAREST and the class-presence label is read off the resized mask (METHOD 1.2).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from apkit.core.errors import DataError
from apkit.core.io import open_image
from apkit.core.validation import check_choice, check_int
from apkit.data.folder import _stats
from apkit.data.transforms import VOC_MEAN, VOC_STD, PairTransform

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
SPLITS = ("train", "val", "seg")
VOID = 255

LAYOUT = """\
ROOT/VOCdevkit/VOC2012/          (ROOT may also be VOCdevkit/ or VOC2012/ itself)
  JPEGImages/<id>.jpg
  Annotations/<id>.xml            (splits train, val)
  ImageSets/Main/train.txt
  ImageSets/Main/val.txt
  ImageSets/Segmentation/val.txt  (split seg)
  SegmentationClass/<id>.png      (split seg)"""


def voc_palette() -> np.ndarray:
    """The 256-entry VOC colour map (index -> RGB), used to decode masks saved as RGB.

    Examples
    --------
    >>> p = voc_palette()
    >>> p[0].tolist(), p[1].tolist(), p[15].tolist(), p[255].tolist()
    ([0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192])
    """
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    code = index.copy()
    # Bit 3j (+1, +2) of the index sets bit 7-j of red (green, blue).
    for j in range(8):
        for channel in range(3):
            palette[:, channel] |= ((code >> channel) & 1) << (7 - j)
        code >>= 3
    return palette.astype(np.uint8)


def find_voc_root(root: str | Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (ROOT/VOCdevkit/VOC2012, ROOT/VOC2012 or ROOT itself)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"VOC root {str(root)!r} is not a folder; expected this layout:\n{LAYOUT}")
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(f"no VOC 2012 data (JPEGImages/) under {str(root)!r}; expected this layout:\n{LAYOUT}")


def _read_ids(path: Path) -> list[str]:
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split list {str(path)!r} is empty; expected one image id per line")
    return ids


def _missing(paths: list[Path], what: str, folder: Path) -> None:
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        raise DataError(f"{len(absent)} {what} missing from {str(folder)!r} ({shown}); expected layout:\n{LAYOUT}")


def parse_annotation(path: str | Path) -> torch.Tensor:
    """20-class multi-hot label of a VOC XML annotation (every object, difficult ones included)."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"cannot read VOC annotation {str(path)!r}: {exc}") from exc
    label = torch.zeros(len(VOC_CLASSES))
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DataError(f"annotation {str(path)!r} names an unknown class {name!r}; "
                            f"VOC classes are: {', '.join(VOC_CLASSES)}")
        label[VOC_CLASSES.index(name)] = 1.0
    return label


def read_voc_mask(path: str | Path) -> np.ndarray:
    """Class-index mask (H, W) uint8 of a VOC segmentation PNG: 0..20 classes, 255 void.

    Palette (``P``) and grey (``L``) PNGs hold the indices themselves; RGB PNGs are decoded by
    exact match to the VOC colour map.
    """
    try:
        with open_image(path, "mask") as png:
            png.load()
            mode = png.mode
            array = np.array(png.convert("RGB") if mode not in ("P", "L", "RGB") else png)
    except OSError as exc:
        raise DataError(f"cannot read VOC mask {str(path)!r}: {exc}") from exc
    if array.ndim == 3:
        palette = voc_palette()[: len(VOC_CLASSES) + 1].astype(np.int64)
        codes = (array[..., 0].astype(np.int64) << 16) | (array[..., 1].astype(np.int64) << 8) | array[..., 2]
        lookup = {int(r) << 16 | int(g) << 8 | int(b): k for k, (r, g, b) in enumerate(palette)}
        lookup[224 << 16 | 224 << 8 | 192] = VOID
        keys = np.array(sorted(lookup))
        values = np.array([lookup[k] for k in keys], dtype=np.uint8)
        position = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
        if not np.all(keys[position] == codes):
            raise DataError(f"VOC mask {str(path)!r} has colours outside the VOC palette (a lossy copy?)")
        array = values[position]
    bad = (array > len(VOC_CLASSES)) & (array != VOID)
    if bad.any():
        raise DataError(f"VOC mask {str(path)!r} has class indices outside 0..20 and 255: "
                        f"{sorted(set(np.unique(array[bad]).tolist()))[:5]}")
    return array.astype(np.uint8)


class VOC2012(Dataset):
    """PASCAL VOC 2012 for multi-label classification and attribution-vs-mask evaluation.

    Parameters
    ----------
    root : str or Path
        The folder holding ``VOCdevkit/VOC2012``, or ``VOCdevkit`` or ``VOC2012`` itself.
    split : {"train", "val", "seg"}
        See the module docstring.
    void : {"background", "ignore"}
        What the mask's void/boundary pixels (255) become: background (0, the paper's protocol:
        they count as negatives) or kept as 255 (ignored by the localization metrics).
    image_size : int
        Side of the square network input (the paper's 227).
    mean, std : 3 floats
        The model's input normalisation (default the paper's VOC statistics).
    transform : PairTransform, optional
        Overrides the paper's transforms (train: RandomResizedCrop + flip; other splits: Resize).

    Items are ``(image, label, mask)``: float32 ``(3, S, S)`` normalised with the paper's VOC
    mean/std, float32 ``(20,)`` multi-hot, uint8 ``(S, S)`` (0 background, ``k + 1`` class ``k``,
    255 void or, for the classification splits, unknown).
    """

    classes = VOC_CLASSES
    num_classes = len(VOC_CLASSES)
    task = "multilabel"
    mask_kind = "class"

    def __init__(self, root: str | Path, split: str = "train", *, void: str = "background", image_size: int = 227,
                 mean: Sequence[float] = VOC_MEAN, std: Sequence[float] = VOC_STD,
                 transform: PairTransform | None = None):
        self.split = check_choice(split, "VOC split", SPLITS)
        self.mean = _stats(mean, "mean", positive=False)
        self.std = _stats(std, "std", positive=True)
        self.void = check_choice(void, "void", ("background", "ignore"))
        self.image_size = check_int(image_size, "image_size", minimum=8)
        self.root = find_voc_root(root)
        listing = (self.root / "ImageSets" / "Segmentation" / "val.txt" if split == "seg"
                   else self.root / "ImageSets" / "Main" / f"{split}.txt")
        if not listing.is_file():
            raise DataError(f"VOC split list {str(listing)!r} is missing; expected layout:\n{LAYOUT}")
        self.ids = _read_ids(listing)
        images = self.root / "JPEGImages"
        _missing([images / f"{i}.jpg" for i in self.ids], "images", images)
        extra = self.root / ("SegmentationClass" if split == "seg" else "Annotations")
        suffix = ".png" if split == "seg" else ".xml"
        _missing([extra / f"{i}{suffix}" for i in self.ids], f"{suffix} files", extra)
        self.transform = transform if transform is not None else PairTransform(
            train=split == "train", size=self.image_size, mean=self.mean, std=self.std)
        # The training transform crops and flips at random; the others give the same item every time.
        self.deterministic = transform is None and split != "train"

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"VOC2012(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"

    def _image(self, image_id: str) -> Image.Image:
        path = self.root / "JPEGImages" / f"{image_id}.jpg"
        try:
            with open_image(path, "image") as image:
                return image.convert("RGB")
        except OSError as exc:
            raise DataError(f"cannot read VOC image {str(path)!r}: {exc}") from exc

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_id = self.ids[index]
        image = self._image(image_id)
        if self.split != "seg":
            tensor, _ = self.transform(image)
            label = parse_annotation(self.root / "Annotations" / f"{image_id}.xml")
            mask = torch.full(tensor.shape[1:], VOID, dtype=torch.uint8)
            return tensor, label, mask
        indices = read_voc_mask(self.root / "SegmentationClass" / f"{image_id}.png")
        if indices.shape != (image.height, image.width):
            raise DataError(f"mask of {image_id!r} is {indices.shape[1]}x{indices.shape[0]} but the image is "
                            f"{image.width}x{image.height}")
        tensor, mask = self.transform(image, Image.fromarray(indices))
        if self.void == "background":
            mask = torch.where(mask == VOID, torch.zeros_like(mask), mask)
        present = torch.zeros(VOID + 1)
        present[mask.flatten().long()] = 1.0
        label = present[1 : len(VOC_CLASSES) + 1].clone()
        return tensor, label, mask
