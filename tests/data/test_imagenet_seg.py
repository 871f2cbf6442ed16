"""The ImageNet loader (class folders, and images with object masks) on tiny folders built here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from apkit import data
from apkit.core.errors import DataError

COLOUR = (200, 100, 50)


@pytest.fixture
def imagenet_root(tmp_path):
    for split, wnid, name in [("train", "n01", "a"), ("train", "n01", "b"), ("train", "n02", "c"),
                              ("val", "n02", "d"), ("val", "n03", "e")]:
        (tmp_path / split / wnid).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), COLOUR).save(tmp_path / split / wnid / f"{name}.JPEG")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (32, 32), COLOUR).save(tmp_path / "images" / "x.JPEG")
    m = np.zeros((32, 32), dtype=np.uint8)
    m[5:20, 8:30] = 255
    m[25, 25] = 7  # any nonzero value is object
    Image.fromarray(m).save(tmp_path / "masks" / "x.png")
    Image.new("RGB", (64, 48), COLOUR).save(tmp_path / "images" / "y.jpg")
    m = np.zeros((48, 64), dtype=np.uint8)
    m[10:40, 3:33] = 1
    Image.fromarray(m).save(tmp_path / "masks" / "y.png")
    return tmp_path


def test_imagenet_folders_multiclass(imagenet_root):
    train = data.create("imagenet-seg", split="train", root=imagenet_root, image_size=16, resize=16)
    assert train.task == "multiclass" and train.classes == ("n01", "n02", "n03") and len(train) == 3
    labels = torch.stack([train[i][1] for i in range(3)])
    assert torch.equal(labels, torch.eye(3)[[0, 0, 1]])
    image, _, mask = train[0]
    assert image.shape == (3, 16, 16) and bool((mask == 255).all()) and mask.shape == (16, 16)
    val = data.create("imagenet-seg", split="val", root=imagenet_root)
    assert torch.equal(torch.stack([val[i][1] for i in range(2)]), torch.eye(3)[[1, 2]])
    assert val[0][0].shape == (3, 224, 224)
    expected = (torch.tensor(COLOUR) / 255 - torch.tensor(val.mean)) / torch.tensor(val.std)
    assert torch.allclose(val[0][0].mean((1, 2)), expected, atol=2 / 255 / 0.22)


def test_imagenet_seg_binary_masks(imagenet_root):
    seg = data.from_spec(f"imagenet-seg:{imagenet_root}", split="seg", image_size=32, resize=32)
    assert len(seg) == 2 and seg.num_classes == 1000 and len(seg.classes) == 1000 and seg.mask_kind == "object"
    _, label, mask = seg[0]  # x: 32x32, identity geometry
    expected = np.zeros((32, 32), dtype=np.uint8)
    expected[5:20, 8:30] = 1
    expected[25, 25] = 1
    assert torch.equal(mask, torch.from_numpy(expected)) and torch.equal(label, torch.zeros(1000))
    # y: 64x48 -> shorter side 256 (341x256), centre crop 224, NEAREST; reference done with PIL itself.
    raw = np.zeros((48, 64), dtype=np.uint8)
    raw[10:40, 3:33] = 1
    big = Image.fromarray(raw).resize((int(256 * 64 / 48), 256), Image.NEAREST)
    left, top = round((big.width - 224) / 2), round((big.height - 224) / 2)
    expected = np.array(big.crop((left, top, left + 224, top + 224)))
    _, _, mask = data.create("imagenet-seg", split="seg", root=imagenet_root)[1]
    assert torch.equal(mask, torch.from_numpy(expected))


def test_imagenet_seg_nested_layout_and_errors(imagenet_root, tmp_path_factory):
    nested = tmp_path_factory.mktemp("nested")
    (imagenet_root / "images").rename(nested / "images")
    (nested / "seg").mkdir()
    (nested / "images").rename(nested / "seg" / "images")
    (imagenet_root / "masks").rename(nested / "seg" / "masks")
    assert len(data.create("imagenet-seg", split="seg", root=nested)) == 2
    with pytest.raises(DataError, match="masks/<name>.png"):
        data.create("imagenet-seg", split="seg", root=imagenet_root)
    (nested / "seg" / "masks" / "y.png").unlink()
    without = data.create("imagenet-seg", split="seg", root=nested)  # masks are optional
    assert without.has_mask == [True, False] and bool((without[1][2] == 255).all())
    Image.new("L", (5, 5)).save(nested / "seg" / "masks" / "y.png")
    with pytest.raises(DataError, match="5x5 but its image is 64x48"):
        data.create("imagenet-seg", split="seg", root=nested)[1]
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match="train/<wnid>"):
        data.create("imagenet-seg", split="train", root=empty)
    (empty / "val").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        data.create("imagenet-seg", split="val", root=empty)
