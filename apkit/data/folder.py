"""Your own images with segmentation masks, from one folder: the ``folder:ROOT`` dataset.

Layout
------
::

    ROOT/classes.txt        one class name per line; line k names mask value k
    ROOT/images/NAME.jpg    (or .jpeg / .png) the images
    ROOT/masks/NAME.png     a mask per image, same NAME and size: a single-channel PNG
                            (greyscale "L" or palette "P"): 0 = background, k = the k-th class
                            of classes.txt, 255 = ignored; an image may have none

The folder is an evaluation set: it serves the split ``"seg"`` (what ``apkit audit`` reads); the
classification splits ``"train"`` and ``"val"`` are refused, since a handful of masked images is
not a training set.  Files in ``images/`` with other extensions and masks without an image are
ignored.  An image without a mask has an unknown label (all zeros) and an all-255 mask: it is
scored on what needs no mask (e.g. similarity to the teacher's maps on the teacher's top-1 class);
``has_mask`` tells which images have one.

Construction checks the whole folder cheaply (names, image and mask headers: single channel,
sizes); the mask values are checked when an item is read, so a huge folder opens at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from apkit.core.errors import DataError, ValidationError
from apkit.core.io import describe_missing, open_image
from apkit.core.validation import check_choice, check_float, check_int
from apkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PairTransform

SPLITS = ("seg",)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VOID = 255
MASK_MODES = ("L", "P", "1")  # single-channel 8-bit (or bilevel) PNGs: the pixel values are the class ids

LAYOUT = """\
ROOT/
  classes.txt       one class name per line (line k = mask value k)
  images/NAME.jpg   (or .jpeg, .png)
  masks/NAME.png    single-channel PNG, same NAME and size: 0 background, k = class k of classes.txt, 255 ignored"""


def _fail(message: str) -> DataError:
    return DataError(f"{message}; expected this layout:\n{LAYOUT}")


def read_classes(path: Path) -> tuple[str, ...]:
    """The class names of ``classes.txt``: one per line, blank lines ignored, no duplicates, at most 254."""
    if not path.is_file():
        raise _fail(f"{describe_missing(path, 'the class list')}: list one class name per line in that file")
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not names:
        raise _fail(f"{str(path)!r} lists no classes: write one class name per line")
    repeated = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if repeated is not None:
        raise _fail(f"{str(path)!r} lists class {repeated!r} twice: each line names one distinct class")
    if len(names) >= VOID:
        raise _fail(f"{str(path)!r} lists {len(names)} classes: masks store class ids 1..254 (255 = ignored), "
                    "so at most 254 classes fit")
    return names


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise _fail(f"no images/ folder in {str(folder.parent)!r}")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                    and not p.name.startswith("."))
    if not images:
        raise _fail(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {str(folder)!r}")
    stems = [p.stem for p in images]
    twice = next((s for i, s in enumerate(stems) if s in stems[:i]), None)
    if twice is not None:
        raise _fail(f"two images in {str(folder)!r} are named {twice!r} (different extensions): each NAME must "
                    "be unique, since masks/NAME.png belongs to one image")
    return images


def _header(path: Path, what: str) -> tuple[str, tuple[int, int]]:
    """Mode and size of an image file, read from its header only."""
    try:
        with open_image(path, what) as image:
            return image.mode, image.size
    except OSError as exc:
        raise DataError(f"cannot read {what} {str(path)!r}: {exc}") from exc


def _check_pair(image: Path, mask: Path) -> None:
    mode, size = _header(mask, "mask")
    if mode not in MASK_MODES:
        raise _fail(f"mask {str(mask)!r} is not single-channel (PNG mode {mode!r}): save it as an 8-bit "
                    "greyscale ('L') or palette ('P') PNG whose pixel values are the class ids")
    _, image_size = _header(image, "image")
    if size != image_size:
        raise _fail(f"mask {str(mask)!r} is {size[0]}x{size[1]} but its image is {image_size[0]}x{image_size[1]}: "
                    "a mask must have its image's size")


def _stats(values: Sequence[float], name: str, *, positive: bool) -> tuple[float, ...]:
    values = tuple(values) if isinstance(values, Sequence) and not isinstance(values, str) else (values,)
    if len(values) != 3:
        raise ValidationError(f"{name} must hold 3 numbers (red, green, blue), got {values!r}")
    return tuple(check_float(v, name, minimum=0.0 if positive else None, exclusive_minimum=positive) for v in values)


class SegmentationFolder(Dataset):
    """Your own images with class masks (see the module docstring for the layout).

    Parameters
    ----------
    root : str or Path
        The folder holding ``classes.txt``, ``images/`` and ``masks/``.
    split : {"seg"}
        The only split: the folder is an evaluation set.
    image_size : int
        Side of the square network input; images are resized to ``image_size x image_size``
        bilinearly, masks with NEAREST (default 224, torchvision's classification models).
    mean, std : 3 floats
        The model's input normalisation (default ImageNet's: mean (0.485, 0.456, 0.406), std
        (0.229, 0.224, 0.225)).

    Items are ``(image, label, mask)``: float32 ``(3, S, S)`` normalised; float32 ``(C,)``
    multi-hot, a class present when it keeps at least one pixel in the resized mask (so every
    labelled class has a mask to score); uint8 ``(S, S)`` with the file's values unchanged (0
    background, ``k`` class ``k - 1`` of ``classes``, 255 ignored).  An image without a mask
    gives a zero label and an all-255 mask.  ``sample_names`` holds each image's file name and
    ``has_mask`` whether it has a mask.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "images").mkdir(); (root / "masks").mkdir()
    >>> _ = (root / "classes.txt").write_text("cat\\ndog\\n")
    >>> Image.new("RGB", (40, 30)).save(root / "images" / "a.jpg")
    >>> mask = Image.new("L", (40, 30)); mask.paste(2, (0, 0, 20, 30)); mask.save(root / "masks" / "a.png")
    >>> seg = SegmentationFolder(root, image_size=32)
    >>> image, label, m = seg[0]
    >>> seg.classes, image.shape, label.tolist(), m.unique().tolist()
    (('cat', 'dog'), torch.Size([3, 32, 32]), [0.0, 1.0], [0, 2])
    """

    task = "multilabel"
    mask_kind = "class"
    deterministic = True  # no random augmentation: an index always gives the same item

    def __init__(self, root: str | Path, split: str = "seg", *, image_size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.split = check_choice(split, "split of a folder: dataset", SPLITS)
        self.image_size = check_int(image_size, "image_size", minimum=8)
        self.mean = _stats(mean, "mean", positive=False)
        self.std = _stats(std, "std", positive=True)
        root = Path(root).expanduser()
        if not root.is_dir():
            raise _fail(f"dataset folder {str(root)!r} is not a folder")
        self.root = root
        if not (root / "masks").is_dir():
            raise _fail(f"no masks/ folder in {str(root)!r}")
        self.images = _images(root / "images")
        self.classes = read_classes(root / "classes.txt")
        self.masks = [root / "masks" / f"{p.stem}.png" for p in self.images]
        self.has_mask = [mask.exists() for mask in self.masks]  # a folder named like a mask is an error, not absent
        for image, mask, present in zip(self.images, self.masks, self.has_mask):
            if present:
                _check_pair(image, mask)
        self.sample_names = [p.name for p in self.images]
        self.transform = PairTransform(train=False, size=self.image_size, mean=self.mean, std=self.std)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"SegmentationFolder(root={str(self.root)!r}, images={len(self)}, classes={self.num_classes})"

    def _mask(self, path: Path) -> np.ndarray:
        try:
            with open_image(path, "mask") as png:
                raw = np.array(png, dtype=np.uint8)
        except OSError as exc:
            raise DataError(f"cannot read mask {str(path)!r}: {exc}") from exc
        bad = (raw > self.num_classes) & (raw != VOID)
        if bad.any():
            values = sorted(np.unique(raw[bad]).tolist())
            raise _fail(f"mask {str(path)!r} has class ids {values[:5]} beyond the {self.num_classes} classes of "
                        f"classes.txt: use 0 (background), 1..{self.num_classes} or 255 (ignored), or add the "
                        "missing classes to classes.txt")
        return raw

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        path = self.images[index]
        if not self.has_mask[index]:
            tensor, _ = self.transform(self._rgb(path))
            return tensor, torch.zeros(self.num_classes), torch.full(tensor.shape[1:], VOID, dtype=torch.uint8)
        raw = self._mask(self.masks[index])
        tensor, mask = self.transform(self._rgb(path), Image.fromarray(raw, mode="L"))
        present = torch.zeros(VOID + 1)
        present[mask.flatten().long()] = 1.0
        return tensor, present[1 : self.num_classes + 1].clone(), mask

    @staticmethod
    def _rgb(path: Path) -> Image.Image:
        try:
            with open_image(path, "image") as image:
                return image.convert("RGB")
        except OSError as exc:
            raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc
