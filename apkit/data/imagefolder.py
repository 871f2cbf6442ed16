"""Your own labelled images in torchvision's ImageFolder layout, with optional masks: ``imagefolder:ROOT``.

Layout
------
::

    ROOT/train/<class>/<name>.jpg            split "train"
    ROOT/val/<class>/<name>.jpg              split "val"
    ROOT/test/<class>/<name>.jpg             split "test" (each split where present)
    ROOT/masks/<split>/<class>/<name>.png    optional: a mask for some images (any subset)

The images are read by :class:`torchvision.datasets.ImageFolder` (every extension it accepts).
The classes are the sorted union of the class folders of all splits, so a class missing from one
split keeps its index.  A mask is a single-channel PNG of the image's size, same ``<class>`` and
``<name>`` as the image: nonzero pixels are the object (of the image's class), zero the
background.

Items are ``(image, label, mask)`` like every apkit dataset: the image float32 ``(3, S, S)``
normalised, the label float32 one-hot ``(C,)`` (a single-label, ``"multiclass"`` task), and the
mask uint8 ``(S, S)`` with 0 background and ``k + 1`` the object of class ``k``, or all 255
(unknown) for an image without a mask.  An image with a mask is scored on localization, every
image on everything else.

Per image the dataset tells the reports what they show:

* ``classes``: the class names (folder names), index = label;
* ``sample_names``: the image's path relative to its split folder, e.g. ``"cat/img_001.jpg"``;
* ``has_mask``: whether the image has a mask (``num_masks`` counts them);
* ``targets``: the class index of each image, as torchvision's ``ImageFolder`` has it.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from PIL import Image
>>> root = Path(tempfile.mkdtemp())
>>> for split, cls in [("train", "cat"), ("train", "dog"), ("val", "dog")]:
...     (root / split / cls).mkdir(parents=True, exist_ok=True)
...     Image.new("RGB", (40, 30), (200, 10, 10)).save(root / split / cls / "a.jpg")
>>> val = ImageFolderData(root, "val", image_size=32)
>>> image, label, mask = val[0]
>>> val.classes, val.sample_names, image.shape, label.tolist(), int(mask.max())
(('cat', 'dog'), ['dog/a.jpg'], torch.Size([3, 32, 32]), [0.0, 1.0], 255)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from apkit.core.errors import DataError
from apkit.core.validation import check_choice, check_int
from apkit.data.folder import _stats
from apkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PairTransform

SPLITS = ("train", "val", "test")
#: Split "seg" (what ``apkit audit`` reads by default) is the held-out split: test/ if present, else val/.
HELD_OUT = ("test", "val")
VOID = 255

LAYOUT = """\
ROOT/
  train/<class>/<name>.jpg          (split train; any image type torchvision's ImageFolder reads)
  val/<class>/<name>.jpg            (split val)
  test/<class>/<name>.jpg           (split test)
  masks/<split>/<class>/<name>.png  (optional: nonzero = the object, 0 = background)"""


def _fail(message: str) -> DataError:
    return DataError(f"{message}; expected this layout:\n{LAYOUT}")


def class_folders(root: Path) -> tuple[str, ...]:
    """The sorted union of the class folders of every split under ``root``."""
    return tuple(sorted({d.name for split in SPLITS if (root / split).is_dir()
                         for d in (root / split).iterdir() if d.is_dir() and not d.name.startswith(".")}))


class _Folder(ImageFolder):
    """torchvision's ImageFolder with the classes of all splits, so indices agree between splits."""

    def __init__(self, root: Path, classes: tuple[str, ...]):
        self._all_classes = classes
        super().__init__(str(root), allow_empty=True)

    def find_classes(self, directory):
        # The classes were found over every split, not in ``directory`` alone.
        return list(self._all_classes), {name: k for k, name in enumerate(self._all_classes)}


class ImageFolderData(Dataset):
    """One split of an ImageFolder tree, with optional masks (see the module docstring).

    Parameters
    ----------
    root : str or Path
        The folder holding ``train/``, ``val/`` and/or ``test/``.
    split : {"train", "val", "test", "seg"}
        ``"seg"`` is the held-out split: ``test/`` if present, else ``val/``.
    image_size : int
        Side of the square network input; images are resized to ``image_size x image_size``
        (bilinear; masks nearest) without keeping the aspect ratio (default 224).
    mean, std : 3 floats
        The model's input normalisation (default ImageNet's).
    augment : bool
        Split ``"train"`` only: random resized crops and flips.  Off by default, so an index always
        gives the same item and compression computes the teacher's outputs once per image.
    """

    task = "multiclass"
    mask_kind = "class"

    def __init__(self, root: str | Path, split: str = "train", *, image_size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, augment: bool = False):
        check_choice(split, "split of an imagefolder: dataset", (*SPLITS, "seg"))
        self.image_size = check_int(image_size, "image_size", minimum=8)
        self.mean = _stats(mean, "mean", positive=False)
        self.std = _stats(std, "std", positive=True)
        root = Path(root).expanduser()
        if not root.is_dir():
            raise _fail(f"dataset folder {str(root)!r} is not a folder")
        self.root = root
        if split == "seg":
            split = next((s for s in HELD_OUT if (root / s).is_dir()), "val")
        self.split = split
        folder = root / split
        if not folder.is_dir():
            present = ", ".join(s for s in SPLITS if (root / s).is_dir()) or "none"
            raise _fail(f"split {split!r} has no folder {str(folder)!r} (splits present: {present})")
        self.classes = class_folders(root)
        try:
            self.folder = _Folder(folder, self.classes)
        except (FileNotFoundError, OSError) as exc:
            raise _fail(f"cannot read {str(folder)!r}: {exc}") from exc
        if not self.folder.samples:
            raise _fail(f"no images in the class folders of {str(folder)!r}")
        self.targets = list(self.folder.targets)
        self.sample_names = [Path(path).relative_to(folder).as_posix() for path, _ in self.folder.samples]
        masks = root / "masks" / split
        self.masks = [masks / Path(name).with_suffix(".png") for name in self.sample_names]
        self.has_mask = [path.is_file() for path in self.masks]
        self.deterministic = not (augment and split == "train")
        self.transform = PairTransform(train=not self.deterministic, size=self.image_size, mean=self.mean,
                                       std=self.std)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_masks(self) -> int:
        """How many images have a mask."""
        return sum(self.has_mask)

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return (f"ImageFolderData(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
                f"classes={self.num_classes}, masks={self.num_masks})")

    def _mask(self, index: int, size: tuple[int, int]) -> Image.Image | None:
        if not self.has_mask[index]:
            return None
        path = self.masks[index]
        try:
            with Image.open(path) as png:
                raw = np.array(png)
        except OSError as exc:
            raise DataError(f"cannot read mask {str(path)!r}: {exc}") from exc
        if raw.shape[:2] != (size[1], size[0]):
            raise _fail(f"mask {str(path)!r} is {raw.shape[1]}x{raw.shape[0]} but its image is {size[0]}x{size[1]}: "
                        "a mask must have its image's size")
        # Any nonzero value (in any channel) marks the object; it becomes the image's class id k + 1.
        obj = raw[..., :3].any(axis=-1) if raw.ndim == 3 else raw != 0
        return Image.fromarray(obj.astype(np.uint8) * (self.targets[index] + 1))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        path, target = self.folder.samples[index]
        try:
            image = self.folder.loader(path)
        except OSError as exc:
            raise DataError(f"cannot read image {path!r}: {exc}") from exc
        tensor, mask = self.transform(image, self._mask(index, image.size))
        if mask is None:
            mask = torch.full(tensor.shape[1:], VOID, dtype=torch.uint8)
        label = torch.zeros(self.num_classes)
        label[target] = 1.0
        return tensor, label, mask
