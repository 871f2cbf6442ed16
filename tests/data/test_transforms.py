"""Image + mask transforms: one geometry for both, exact masks, the paper's and ImageNet's settings."""

import numpy as np
import pytest
import torch
from PIL import Image

from apkit.core.errors import ValidationError
from apkit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC_MEAN,
    VOC_STD,
    PairTransform,
    imagenet_transform,
    voc_transform,
)

HALF = (0.5, 0.5, 0.5)


def _quadrant_mask(side: int) -> Image.Image:
    """Values 1, 2 (top) and 3, 4 (bottom), one per quadrant."""
    half = side // 2
    array = np.zeros((side, side), dtype=np.uint8)
    array[:half, :half], array[:half, half:], array[half:, :half], array[half:, half:] = 1, 2, 3, 4
    return Image.fromarray(array)


def test_evaluation_resize_normalises_and_keeps_mask_indices_exact():
    transform = PairTransform(train=False, size=4, mean=HALF, std=HALF)
    image, mask = transform(Image.new("RGB", (8, 8), (255, 0, 51)), _quadrant_mask(8))
    assert image.dtype == torch.float32 and image.shape == (3, 4, 4)
    # (value / 255 - 0.5) / 0.5 for every pixel of a one-colour image.
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([1.0, -1.0, -0.6]))
    assert bool((image == image[:, :1, :1]).all())
    assert mask.dtype == torch.uint8
    assert mask.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert transform(Image.new("RGB", (8, 8)))[1] is None  # no mask given


def test_evaluation_resize_ignores_the_aspect_ratio_unless_resize_is_given():
    columns = Image.fromarray(np.tile(np.arange(8, dtype=np.uint8), (4, 1)))  # 8 wide, 4 tall: value = column
    image = Image.new("RGB", (8, 4))
    _, squeezed = PairTransform(train=False, size=4, mean=HALF, std=HALF)(image, columns)
    assert squeezed.shape == (4, 4) and squeezed[0].tolist() == [1, 3, 5, 7]  # NEAREST keeps every other column
    # Shorter side to 4 (already), then the centre 4 x 4 crop: columns 2..5.
    _, cropped = PairTransform(train=False, size=4, mean=HALF, std=HALF, resize=4)(image, columns)
    assert cropped.tolist() == [[2, 3, 4, 5]] * 4


def test_training_geometry_is_shared_by_image_and_mask_and_follows_the_global_seed():
    transform = PairTransform(train=True, size=16, mean=(0.0,) * 3, std=(1.0,) * 3)
    array = np.zeros((32, 32), dtype=np.uint8)
    array[:, :8] = 255  # a bright band on the left only: a flip of one but not the other would show
    image, mask = Image.fromarray(array).convert("RGB"), Image.fromarray(array)
    for seed in range(6):
        torch.manual_seed(seed)
        out, out_mask = transform(image, mask)
        torch.manual_seed(seed)
        again, again_mask = transform(image, mask)
        assert torch.equal(out, again) and torch.equal(out_mask, again_mask)
        bright = out_mask == 255
        if bright.any() and (~bright).any():
            assert float(out[0][bright].mean()) > float(out[0][~bright].mean()) + 0.5


def test_settings_of_the_paper_and_imagenet():
    voc_train, voc_eval = voc_transform(train=True), voc_transform(train=False)
    assert (voc_train.size, voc_train.mean, voc_train.std, voc_eval.resize) == (227, VOC_MEAN, VOC_STD, None)
    assert voc_train.train and not voc_eval.train
    imagenet_train, imagenet_eval = imagenet_transform(train=True), imagenet_transform(train=False)
    assert (imagenet_eval.size, imagenet_eval.resize, imagenet_eval.mean, imagenet_eval.std) == (
        224, 256, IMAGENET_MEAN, IMAGENET_STD)
    assert imagenet_train.resize is None  # RandomResizedCrop decides the scale
    assert repr(imagenet_eval) == "PairTransform(train=False, size=224, resize=256)"


def test_bad_sizes_are_refused():
    with pytest.raises(ValidationError, match="image_size must be >= 1"):
        PairTransform(train=False, size=0, mean=HALF, std=HALF)
    with pytest.raises(ValidationError, match="resize must be >= 8, got 4"):
        PairTransform(train=False, size=8, mean=HALF, std=HALF, resize=4)
