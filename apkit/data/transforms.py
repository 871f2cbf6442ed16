"""Image + mask transforms of the real datasets (the paper's VOC recipe, standard ImageNet).

A :class:`PairTransform` takes a PIL image and, optionally, a PIL mask of class indices, and
applies one geometry to both: images are resampled bilinearly (PIL, as in the paper's code),
masks with NEAREST so that class indices stay exact.  The output image is a normalised float32
tensor ``(3, size, size)``; the mask a uint8 tensor ``(size, size)``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from apkit.core.validation import check_int

#: The paper's PASCAL VOC normalisation (METHOD 1.2).
VOC_MEAN = (0.4589, 0.4355, 0.4032)
VOC_STD = (0.2239, 0.2186, 0.2206)
#: The standard ImageNet normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PairTransform:
    """One random or fixed geometry applied to an image and its mask, then ToTensor + Normalize.

    Parameters
    ----------
    train : bool
        ``True``: RandomResizedCrop(size) (scale (0.08, 1), ratio (3/4, 4/3)) + horizontal flip
        with probability 0.5, drawn from torch's global generator. ``False``: the evaluation geometry.
    size : int
        Side of the square output.
    mean, std : tuple of 3 floats
        Normalisation.
    resize : int, optional
        Evaluation geometry: ``None`` resizes to ``(size, size)`` without keeping the aspect ratio
        (the paper's VOC protocol); an integer resizes the shorter side to ``resize`` and takes the
        centre ``size x size`` crop (the ImageNet protocol).

    Examples
    --------
    >>> from PIL import Image
    >>> t = PairTransform(train=False, size=4, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> image, mask = t(Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("L", (8, 6), 3))
    >>> image[:, 0, 0].tolist(), mask.dtype, mask.unique().tolist()
    ([1.0, -1.0, -1.0], torch.uint8, [3])
    """

    def __init__(self, *, train: bool, size: int, mean: tuple, std: tuple, resize: int | None = None):
        self.train = bool(train)
        self.size = check_int(size, "image_size", minimum=1)
        self.resize = None if resize is None else check_int(resize, "resize", minimum=self.size)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __repr__(self) -> str:
        return f"PairTransform(train={self.train}, size={self.size}, resize={self.resize})"

    def geometry(self, image: Image.Image, interpolation: InterpolationMode, params: dict) -> Image.Image:
        """Apply the geometry recorded in ``params`` to one PIL image."""
        size = [self.size, self.size]
        if self.train:
            image = TF.resized_crop(image, *params["crop"], size, interpolation=interpolation)
            return TF.hflip(image) if params["flip"] else image
        if self.resize is None:
            return TF.resize(image, size, interpolation=interpolation)
        image = TF.resize(image, [self.resize], interpolation=interpolation)
        return TF.center_crop(image, size)

    def __call__(self, image: Image.Image, mask: Image.Image | None = None):
        params = {}
        if self.train:
            params["crop"] = T.RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
            params["flip"] = bool(torch.rand(1) < 0.5)
        out = TF.to_tensor(self.geometry(image, InterpolationMode.BILINEAR, params))
        out = TF.normalize(out, self.mean, self.std)
        if mask is None:
            return out, None
        mask = self.geometry(mask, InterpolationMode.NEAREST, params)
        return out, torch.from_numpy(np.array(mask, dtype=np.uint8))


def voc_transform(*, train: bool, size: int = 227) -> PairTransform:
    """The paper's VOC transforms: train RandomResizedCrop(227) + flip; eval Resize((227, 227))."""
    return PairTransform(train=train, size=size, mean=VOC_MEAN, std=VOC_STD)


def imagenet_transform(*, train: bool, size: int = 224, resize: int = 256) -> PairTransform:
    """Standard ImageNet transforms: train RandomResizedCrop(224) + flip; eval Resize(256) + CenterCrop(224)."""
    return PairTransform(train=train, size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         resize=None if train else resize)
