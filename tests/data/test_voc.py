"""The VOC 2012 loader on a tiny folder built here, and the dataset registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from apkit import data
from apkit.core.errors import DataError, UnknownNameError, ValidationError
from apkit.data.voc import VOC_CLASSES, voc_palette

DOG, PERSON, CAT, CHAIR = (VOC_CLASSES.index(c) for c in ("dog", "person", "cat", "chair"))
COLOUR = (200, 100, 50)


def _xml(*objects: tuple[str, int]) -> str:
    body = "".join(f"<object><name>{name}</name><difficult>{difficult}</difficult></object>"
                   for name, difficult in objects)
    return f"<annotation><filename>x.jpg</filename>{body}</annotation>"


def _seg_mask(size: int) -> np.ndarray:
    """A VOC-style index mask: dog block, person block, void outline, one lone chair pixel at (0, 0)."""
    m = np.zeros((size, size), dtype=np.uint8)
    m[4:20, 4:20] = DOG + 1
    m[24:40, 30:50] = PERSON + 1
    m[3, 3:21] = 255
    m[0, 0] = CHAIR + 1
    return m


def _save_palette_png(array: np.ndarray, path) -> None:
    png = Image.new("P", array.shape[::-1])
    png.putpalette(voc_palette().flatten().tolist())
    png.putdata(array.flatten().tolist())
    png.save(path)


@pytest.fixture
def voc_root(tmp_path):
    """tmp/VOCdevkit/VOC2012 with 3 images: a (dog + difficult person), b (cat), c (no object)."""
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationClass"):
        (base / sub).mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (64, 64), COLOUR).save(base / "JPEGImages" / f"{name}.jpg", quality=100)
    (base / "Annotations" / "a.xml").write_text(_xml(("dog", 0), ("person", 1)))
    (base / "Annotations" / "b.xml").write_text(_xml(("cat", 0), ("cat", 0)))
    (base / "Annotations" / "c.xml").write_text(_xml())
    (base / "ImageSets/Main/train.txt").write_text("a\nb\n")
    (base / "ImageSets/Main/val.txt").write_text("c\n")
    (base / "ImageSets/Segmentation/val.txt").write_text("a\nc\n")
    _save_palette_png(_seg_mask(64), base / "SegmentationClass" / "a.png")
    _save_palette_png(np.zeros((64, 64), dtype=np.uint8), base / "SegmentationClass" / "c.png")
    return tmp_path


def _onehot(*classes: int, n: int = 20) -> torch.Tensor:
    label = torch.zeros(n)
    label[list(classes)] = 1.0
    return label


# ----------------------------------------------------------------------------------------------- VOC
def test_voc_classification_labels_from_xml(voc_root):
    train = data.create("voc", split="train", root=voc_root, image_size=32)
    assert len(train) == 2 and train.num_classes == 20 and train.task == "multilabel"
    assert train.mean == (0.4589, 0.4355, 0.4032) and train.std == (0.2239, 0.2186, 0.2206)
    image, label, mask = train[0]
    assert torch.equal(label, _onehot(DOG, PERSON))  # the difficult person counts
    assert torch.equal(train[1][1], _onehot(CAT))
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert mask.shape == (32, 32) and mask.dtype == torch.uint8 and bool((mask == 255).all())
    # A constant-colour image stays constant under any crop: check the normalisation values.
    expected = (torch.tensor(COLOUR) / 255 - torch.tensor(train.mean)) / torch.tensor(train.std)
    assert torch.allclose(image.mean((1, 2)), expected, atol=2 / 255 / 0.21)
    val = data.create("voc", split="val", root=voc_root)
    image, label, mask = val[0]
    assert image.shape == (3, 227, 227) and torch.equal(label, torch.zeros(20)) and mask.shape == (227, 227)


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_root_forms(voc_root, sub):
    assert len(data.from_spec(f"voc:{voc_root / sub}", split="seg")) == 2


def test_voc_seg_masks_void_both_ways(voc_root):
    raw = _seg_mask(64)
    seg = data.create("voc", split="seg", root=voc_root, image_size=64)  # same size: mask unchanged
    _, label, mask = seg[0]
    assert torch.equal(mask, torch.from_numpy(np.where(raw == 255, 0, raw)))
    assert torch.equal(label, _onehot(DOG, PERSON, CHAIR))
    kept = data.create("voc", split="seg", root=voc_root, image_size=64, void="ignore")
    _, label_kept, mask_kept = kept[0]
    assert torch.equal(mask_kept, torch.from_numpy(raw))
    assert torch.equal(label_kept, label)  # void is never a class
    _, label_c, mask_c = seg[1]
    assert torch.equal(label_c, torch.zeros(20)) and bool((mask_c == 0).all())


def test_voc_seg_resized_mask_nearest_and_label_from_it(voc_root):
    raw = _seg_mask(64)
    # 64 -> 16 with NEAREST samples every 4th pixel from 2: the lone chair pixel at (0, 0) vanishes,
    # so the label (read off the resized mask) loses "chair".
    _, label, mask = data.create("voc", split="seg", root=voc_root, image_size=16, void="ignore")[0]
    expected = np.array(Image.fromarray(raw).resize((16, 16), Image.NEAREST))
    assert torch.equal(mask, torch.from_numpy(expected))
    assert torch.equal(mask, torch.from_numpy(raw[2::4, 2::4]))
    assert torch.equal(label, _onehot(DOG, PERSON))
    _, _, big = data.create("voc", split="seg", root=voc_root)[0]  # default 227 x 227
    expected = np.array(Image.fromarray(np.where(raw == 255, 0, raw).astype(np.uint8)).resize((227, 227),
                                                                                              Image.NEAREST))
    assert torch.equal(big, torch.from_numpy(expected))


def test_voc_rgb_mask_decoded_by_palette(voc_root):
    base = voc_root / "VOCdevkit" / "VOC2012"
    raw = _seg_mask(64)
    Image.fromarray(voc_palette()[raw]).save(base / "SegmentationClass" / "a.png")  # an RGB copy
    _, _, mask = data.create("voc", split="seg", root=voc_root, image_size=64, void="ignore")[0]
    assert torch.equal(mask, torch.from_numpy(raw))


def test_voc_bad_inputs(voc_root, tmp_path_factory):
    base = voc_root / "VOCdevkit" / "VOC2012"
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match="JPEGImages"):
        data.create("voc", split="train", root=empty)
    with pytest.raises(DataError, match="not a folder"):
        data.create("voc", split="train", root=empty / "nope")
    with pytest.raises(UnknownNameError, match="train, val, seg"):
        data.create("voc", split="test", root=voc_root)
    with pytest.raises(UnknownNameError, match="background, ignore"):
        data.create("voc", split="seg", root=voc_root, void="drop")
    with pytest.raises(ValidationError, match="does not take options"):
        data.create("voc", split="seg", root=voc_root, num_samples=3)
    (base / "Annotations" / "b.xml").unlink()
    with pytest.raises(DataError, match=r"1 \.xml files missing.*b\.xml"):
        data.create("voc", split="train", root=voc_root)
    (base / "ImageSets/Main/val.txt").unlink()
    with pytest.raises(DataError, match="val.txt"):
        data.create("voc", split="val", root=voc_root)
    (base / "Annotations" / "a.xml").write_text(_xml(("unicorn", 0)))
    (base / "ImageSets/Main/train.txt").write_text("a\n")
    with pytest.raises(DataError, match="unknown class 'unicorn'"):
        data.create("voc", split="train", root=voc_root)[0]
    (base / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match="cannot read VOC annotation"):
        data.create("voc", split="train", root=voc_root)[0]
    bad = np.zeros((64, 64), dtype=np.uint8)
    bad[0, 0] = 50
    _save_palette_png(bad, base / "SegmentationClass" / "a.png")
    with pytest.raises(DataError, match="outside 0..20"):
        data.create("voc", split="seg", root=voc_root)[0]
    Image.new("RGB", (64, 64), (1, 2, 3)).save(base / "SegmentationClass" / "a.png")
    with pytest.raises(DataError, match="outside the VOC palette"):
        data.create("voc", split="seg", root=voc_root)[0]
    _save_palette_png(np.zeros((10, 10), dtype=np.uint8), base / "SegmentationClass" / "a.png")
    with pytest.raises(DataError, match="10x10 but the image is 64x64"):
        data.create("voc", split="seg", root=voc_root)[0]


# ------------------------------------------------------------------------------------------ registry
def test_registry_and_specs(voc_root):
    assert data.DATASETS.names() == ["synthetic", "voc", "imagenet-seg", "folder", "imagefolder"]
    with pytest.raises(UnknownNameError, match="synthetic, voc, imagenet-seg"):
        data.create("coco", split="train")
    with pytest.raises(UnknownNameError, match="synthetic, voc, imagenet-seg"):
        data.from_spec("coco:/data", split="train")
    with pytest.raises(DataError, match="voc:/path/to/VOCdevkit"):
        data.create("voc", split="val")
    with pytest.raises(DataError, match="voc:/path/to/VOCdevkit"):
        data.from_spec("voc", split="val")
    with pytest.raises(DataError, match="names no folder"):
        data.from_spec("voc:", split="val")
    with pytest.raises(DataError, match="imagenet-seg:/path/to/imagenet"):
        data.create("imagenet-seg", split="seg")
    with pytest.raises(ValidationError, match="drop root"):
        data.create("synthetic", split="train", root=voc_root)
    with pytest.raises(ValidationError, match="spec must be a string"):
        data.from_spec(None, split="train")
    with pytest.raises(UnknownNameError, match="train, val, seg"):
        data.from_spec("synthetic", split="test")
    with pytest.raises(ValidationError, match="num_samples, image_size, seed, cache"):
        data.create("synthetic", split="train", colour=True)
    assert data.from_spec(f"voc:{voc_root}", split="train").root.name == "VOC2012"
