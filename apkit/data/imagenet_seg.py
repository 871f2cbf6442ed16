"""ImageNet from a local folder, and ImageNet images with object masks (the supplement's protocol).

Layout
------
::

    ROOT/train/<wnid>/<name>.JPEG      split "train" (standard ImageFolder layout)
    ROOT/val/<wnid>/<name>.JPEG        split "val"   (validation images sorted into class folders)
    ROOT/images/<name>.JPEG            split "seg"   (also accepted under ROOT/seg/)
    ROOT/masks/<name>.png              a mask per image, same name; nonzero pixels = object (optional:
                                       an image without one has an all-255, unknown, mask)

The segmentation images carry full-ImageNet synsets that need not be among the 1,000 classes, so
their labels are unknown (METHOD 4.5): attributions are taken for the model's top-1 prediction,
the label is a zero vector of 1,000 entries, and the mask is binary: 1 = object (of whatever class
the image shows), 0 = background.  ``mask_kind == "object"`` says so to the metrics.
"""

from __future__ import annotations

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
from apkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PairTransform

SPLITS = ("train", "val", "seg")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
VOID = 255

LAYOUT = """\
ROOT/
  train/<wnid>/<name>.JPEG   (split train)
  val/<wnid>/<name>.JPEG     (split val)
  images/<name>.JPEG         (split seg; or ROOT/seg/images/)
  masks/<name>.png           (split seg; or ROOT/seg/masks/; nonzero = object)"""


def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in the standard (sorted-wnid) order, from torchvision."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _open_rgb(path: Path) -> Image.Image:
    try:
        with open_image(path, "image") as image:
            return image.convert("RGB")
    except OSError as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc


class ImageNetSeg(Dataset):
    """ImageNet classification splits and the image + binary-mask set (split ``"seg"``).

    Parameters
    ----------
    root : str or Path
        See the module docstring for the layout.
    split : {"train", "val", "seg"}
        ``"train"`` / ``"val"``: multiclass, label one-hot float over the class folders found (the
        sorted union of ``train/`` and ``val/`` wnids), mask all 255. ``"seg"``: label all zeros
        (1,000 entries), mask 1 = object, 0 = background.
    image_size : int
        Network input side (224).
    resize : int, optional
        Shorter side before the centre crop in evaluation (default ``image_size * 8 / 7``, 256 at 224).
    mean, std : 3 floats
        The model's input normalisation (default ImageNet's).
    transform : PairTransform, optional
        Overrides the standard transforms (train: RandomResizedCrop + flip; else Resize + CenterCrop).
    """

    task = "multiclass"

    def __init__(self, root: str | Path, split: str = "seg", *, image_size: int = 224, resize: int | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 transform: PairTransform | None = None):
        self.split = check_choice(split, "ImageNet split", SPLITS)
        self.image_size = check_int(image_size, "image_size", minimum=8)
        resize = round(self.image_size * 8 / 7) if resize is None else resize
        check_int(resize, "resize", minimum=self.image_size)
        self.mean = _stats(mean, "mean", positive=False)
        self.std = _stats(std, "std", positive=True)
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"ImageNet root {str(root)!r} is not a folder; expected this layout:\n{LAYOUT}")
        self.root = root
        self.transform = transform if transform is not None else PairTransform(
            train=split == "train", size=self.image_size, mean=self.mean, std=self.std,
            resize=None if split == "train" else resize)
        # The training transform crops and flips at random; the others give the same item every time.
        self.deterministic = transform is None and split != "train"
        if split == "seg":
            self._init_seg(root)
        else:
            self._init_folder(root, split)

    def _init_seg(self, root: Path) -> None:
        base = next((b for b in (root, root / "seg") if (b / "images").is_dir() and (b / "masks").is_dir()), None)
        if base is None:
            raise DataError(f"no images/ and masks/ folders under {str(root)!r}; expected this layout:\n{LAYOUT}")
        self.images = _images_in(base / "images")
        if not self.images:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {str(base / 'images')!r}")
        self.masks = [base / "masks" / f"{p.stem}.png" for p in self.images]
        self.has_mask = [m.is_file() for m in self.masks]
        self.classes = imagenet_class_names()
        self.targets = None
        self.mask_kind = "object"  # mask value 1 marks the object, whatever its class
        self.sample_names = [p.name for p in self.images]

    def _init_folder(self, root: Path, split: str) -> None:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"ImageNet split folder {str(folder)!r} is missing; expected this layout:\n{LAYOUT}")
        wnids = sorted({d.name for s in ("train", "val") if (root / s).is_dir()
                        for d in (root / s).iterdir() if d.is_dir()})
        self.images, self.targets = [], []
        for k, wnid in enumerate(wnids):
            if (folder / wnid).is_dir():
                found = _images_in(folder / wnid)
                self.images += found
                self.targets += [k] * len(found)
        if not self.images:
            raise DataError(f"no class folders with images in {str(folder)!r}; expected this layout:\n{LAYOUT}")
        self.classes = tuple(wnids)
        self.masks = None
        self.has_mask = [False] * len(self.images)
        self.mask_kind = "class"
        self.sample_names = [p.relative_to(folder).as_posix() for p in self.images]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"ImageNetSeg(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = _open_rgb(self.images[index])
        label = torch.zeros(self.num_classes)
        if self.masks is None or not self.has_mask[index]:
            tensor, _ = self.transform(image)
            if self.targets is not None:
                label[self.targets[index]] = 1.0
            return tensor, label, torch.full(tensor.shape[1:], VOID, dtype=torch.uint8)
        path = self.masks[index]
        try:
            with open_image(path, "mask") as png:
                raw = np.array(png)
        except OSError as exc:
            raise DataError(f"cannot read mask {str(path)!r}: {exc}") from exc
        if raw.shape[:2] != (image.height, image.width):
            raise DataError(f"mask {str(path)!r} is {raw.shape[1]}x{raw.shape[0]} but its image is "
                            f"{image.width}x{image.height}")
        # Any nonzero value (any nonzero colour channel, for RGB masks) marks the object.
        obj = raw[..., :3].any(axis=-1) if raw.ndim == 3 else raw != 0
        binary = Image.fromarray(obj.astype(np.uint8))
        tensor, mask = self.transform(image, binary)
        return tensor, label, mask
