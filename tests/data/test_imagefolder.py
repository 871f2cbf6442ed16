"""imagefolder:ROOT: torchvision's ImageFolder layout, classes over all splits, optional masks, input options."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from apkit.core.errors import ApkitError, DataError
from apkit.data import ImageFolderData, from_spec


def _tree(root, layout, size=(40, 30)):
    """Write ``{split: {class: n_images}}`` as JPEGs with distinct colours; return the paths."""
    paths = []
    for split, classes in layout.items():
        for k, (name, n) in enumerate(classes.items()):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                path = root / split / name / f"img{i}.jpg"
                Image.new("RGB", size, (40 * k + 20, 10 * i, 200)).save(path, quality=95)
                paths.append(path)
    return paths


def test_labels_classes_and_names_follow_torchvision(tmp_path):
    _tree(tmp_path, {"train": {"cat": 2, "dog": 3, "fox": 1}, "val": {"cat": 1, "fox": 2}})
    val = from_spec(f"imagefolder:{tmp_path}", split="val", image_size=16)
    reference = torchvision.datasets.ImageFolder(tmp_path / "train")
    assert val.classes == tuple(reference.classes) == ("cat", "dog", "fox")
    assert val.num_classes == 3 and val.task == "multiclass" and val.deterministic
    # val/ lacks "dog": its classes keep the indices of the union, so "fox" is 2 in both splits
    assert val.targets == [0, 2, 2]
    assert val.sample_names == ["cat/img0.jpg", "fox/img0.jpg", "fox/img1.jpg"]
    labels = torch.stack([val[i][1] for i in range(len(val))])
    assert torch.equal(labels, torch.eye(3)[[0, 2, 2]])
    train = from_spec(f"imagefolder:{tmp_path}", split="train", image_size=16)
    assert train.targets == reference.targets and len(train) == 6


def test_pixels_are_the_resized_normalised_image(tmp_path):
    _tree(tmp_path, {"train": {"a": 1, "b": 1}})
    data = ImageFolderData(tmp_path, "train", image_size=20, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    image, _, mask = data[1]
    with Image.open(tmp_path / "train" / "b" / "img0.jpg") as pil:
        resized = np.asarray(pil.convert("RGB").resize((20, 20), Image.BILINEAR), dtype=np.float32) / 255
    expected = (torch.from_numpy(resized).permute(2, 0, 1) - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) \
        / torch.tensor([0.2, 0.25, 0.5])[:, None, None]
    assert image.shape == (3, 20, 20)
    assert torch.allclose(image, expected, atol=1e-5)
    assert mask.shape == (20, 20) and bool((mask == 255).all())  # no mask: unknown everywhere


def test_optional_masks_mark_the_object_with_its_class(tmp_path):
    _tree(tmp_path, {"train": {"a": 1}, "val": {"a": 1, "b": 2}})
    (tmp_path / "masks" / "val" / "b").mkdir(parents=True)
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[:, :20] = 1  # left half is the object
    Image.fromarray(mask * 255).save(tmp_path / "masks" / "val" / "b" / "img1.png")
    val = ImageFolderData(tmp_path, "val", image_size=8)
    assert val.has_mask == [False, False, True] and val.num_masks == 1
    _, label, resized = val[2]
    assert label.tolist() == [0.0, 1.0]
    expected = torch.zeros(8, 8, dtype=torch.uint8)
    expected[:, :4] = 2  # class b (index 1) is stored as 2; background 0
    assert torch.equal(resized, expected)
    assert bool((val[0][2] == 255).all())


def test_seg_is_the_held_out_split_and_errors_name_the_fix(tmp_path):
    _tree(tmp_path, {"train": {"a": 1, "b": 1}, "val": {"a": 1}})
    assert from_spec(f"imagefolder:{tmp_path}", split="seg").split == "val"
    _tree(tmp_path, {"test": {"b": 1}})
    assert from_spec(f"imagefolder:{tmp_path}", split="seg").split == "test"
    with pytest.raises(DataError, match="no split .training.*train/, val/ and test/"):
        from_spec(f"imagefolder:{tmp_path}", split="training")
    with pytest.raises(DataError, match="not a folder"):
        from_spec(f"imagefolder:{tmp_path}/nowhere", split="train")
    with pytest.raises(ApkitError, match="3 numbers"):
        from_spec(f"imagefolder:{tmp_path}", split="train", mean=(0.5, 0.5))
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        from_spec(f"imagefolder:{empty}", split="train")
    with pytest.raises(DataError, match="splits present: train"):
        from_spec(f"imagefolder:{empty}", split="val")


def test_folder_refuses_training_and_points_to_imagefolder(tmp_path):
    with pytest.raises(DataError, match="imagefolder:ROOT"):
        from_spec(f"folder:{tmp_path}", split="train")
