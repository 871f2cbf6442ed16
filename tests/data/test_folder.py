"""The ``folder:ROOT`` dataset (your own images and masks) on tiny folders built here: items, options, bad layouts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image

from apkit import data, models
from apkit.cli import main
from apkit.core.errors import DataError, UnknownNameError, ValidationError
from apkit.training import datasets_for

COLOUR = (200, 100, 50)
CLASSES = ("cat", "dog", "car")


def _mask_a() -> np.ndarray:
    """48x64: dog block, car block, an ignored outline, and one lone cat pixel at (0, 0)."""
    m = np.zeros((48, 64), dtype=np.uint8)
    m[4:20, 4:20] = 2
    m[24:40, 30:50] = 3
    m[3, 3:21] = 255
    m[0, 0] = 1
    return m


@pytest.fixture
def root(tmp_path):
    """tmp/mine with a.png (dog, car, lone cat pixel, void) and b.jpg (background only), plus clutter."""
    base = tmp_path / "mine"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    (base / "classes.txt").write_text("cat\ndog\n\ncar\n")  # a blank line is ignored
    Image.new("RGB", (64, 48), COLOUR).save(base / "images" / "a.png")
    Image.fromarray(_mask_a()).save(base / "masks" / "a.png")
    Image.new("RGB", (30, 20), COLOUR).save(base / "images" / "b.jpg", quality=100)
    palette = Image.new("P", (30, 20), 0)  # a palette PNG holds the class ids as its indices
    palette.putpalette([0, 0, 0, 255, 0, 0] * 128)
    palette.save(base / "masks" / "b.png")
    (base / "images" / "notes.txt").write_text("not an image")  # other files are ignored
    Image.new("L", (5, 5)).save(base / "masks" / "orphan.png")  # a mask without an image too
    return base


def _label(*classes: int) -> torch.Tensor:
    label = torch.zeros(len(CLASSES))
    label[list(classes)] = 1.0
    return label


def test_items_follow_apkit_conventions(root):
    seg = data.from_spec(f"folder:{root}", split="seg")
    assert len(seg) == 2 and seg.classes == CLASSES and seg.num_classes == 3 and seg.task == "multilabel"
    assert seg.mean == data.IMAGENET_MEAN and seg.std == data.IMAGENET_STD and seg.image_size == 224
    assert seg.deterministic and seg.split == "seg" and seg.mask_kind == "class"
    image, label, mask = seg[0]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    assert label.dtype == torch.float32 and mask.shape == (224, 224) and mask.dtype == torch.uint8
    expected = (torch.tensor(COLOUR) / 255 - torch.tensor(seg.mean)) / torch.tensor(seg.std)
    assert torch.allclose(image.mean((1, 2)), expected, atol=1e-5)
    # 64x48 -> 224x224 with NEAREST, as PIL does it.
    reference = np.array(Image.fromarray(_mask_a()).resize((224, 224), Image.NEAREST))
    assert torch.equal(mask, torch.from_numpy(reference))
    assert torch.equal(seg[1][1], torch.zeros(3)) and bool((seg[1][2] == 0).all())


def test_mask_values_unchanged_and_label_from_the_resized_mask(root):
    same = data.create("folder", split="seg", root=root, image_size=64)  # 64x48 -> 64x64: rows repeat
    _, label, mask = same[0]
    assert set(mask.unique().tolist()) == {0, 1, 2, 3, 255}  # the file's values, void kept
    assert torch.equal(label, _label(0, 1, 2))  # the lone cat pixel survives, 255 is never a class
    # At 16x16 NEAREST samples every 4th column / 3rd row: the lone cat pixel at (0, 0) vanishes,
    # so the label, read off the resized mask, loses "cat".
    _, label, mask = data.create("folder", split="seg", root=root, image_size=16)[0]
    assert torch.equal(mask, torch.from_numpy(np.array(Image.fromarray(_mask_a()).resize((16, 16), Image.NEAREST))))
    assert torch.equal(label, _label(1, 2))


def test_options_and_splits(root):
    seg = data.from_spec(f"folder:{root}", split="seg", image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = seg[0][0]
    assert image.shape == (3, 32, 32) and seg.mean == (0.5, 0.5, 0.5)
    assert torch.allclose(image[:, 0, 0], (torch.tensor(COLOUR) / 255 - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(ValidationError, match="mean must hold 3 numbers"):
        data.create("folder", split="seg", root=root, mean=(0.5, 0.5))
    with pytest.raises(ValidationError, match="std must be > 0"):
        data.create("folder", split="seg", root=root, std=(0.2, 0.0, 0.2))
    with pytest.raises(ValidationError, match="image_size"):
        data.create("folder", split="seg", root=root, image_size=2)
    with pytest.raises(ValidationError, match="does not take options"):
        data.create("folder", split="seg", root=root, void="ignore")
    for split in ("train", "val"):
        with pytest.raises(DataError, match="has no split '.*': it is an evaluation set .* serves split 'seg' only"):
            data.from_spec(f"folder:{root}", split=split)
    with pytest.raises(UnknownNameError, match="seg"):
        data.SegmentationFolder(root, "test")
    with pytest.raises(DataError, match="folder:/path/to/my-images"):
        data.from_spec("folder", split="seg")
    assert "folder" in data.DATASETS.names()


def _layout_error(root, match, *, read=False):
    with pytest.raises(DataError, match=match) as info:
        dataset = data.create("folder", split="seg", root=root)
        if read:
            dataset[0]
    message = str(info.value)
    assert "expected this layout:" in message and "masks/NAME.png" in message and "classes.txt" in message
    return message


@pytest.mark.parametrize("damage, match", [
    pytest.param(lambda r: shutil.rmtree(r / "masks"), "no masks/ folder", id="no-masks"),
    pytest.param(lambda r: shutil.rmtree(r / "images"), "no images/ folder", id="no-images"),
    pytest.param(lambda r: [p.unlink() for p in (r / "images").iterdir()], "no images", id="empty-images"),
    pytest.param(lambda r: (r / "classes.txt").unlink(), "classes.txt' is missing", id="no-classes"),
    pytest.param(lambda r: (r / "classes.txt").write_text("\n\n"), "lists no classes", id="empty-classes"),
    pytest.param(lambda r: (r / "classes.txt").write_text("cat\ndog\ncat\n"), "lists class 'cat' twice",
                 id="repeated-class"),
    pytest.param(lambda r: Image.new("RGB", (30, 20)).save(r / "masks" / "b.png"),
                 r"b\.png' is not single-channel.*'RGB'", id="rgb-mask"),
    pytest.param(lambda r: Image.new("LA", (30, 20)).save(r / "masks" / "b.png"),
                 r"b\.png' is not single-channel.*'LA'", id="grey-alpha-mask"),
    pytest.param(lambda r: Image.new("L", (20, 30)).save(r / "masks" / "b.png"),
                 r"b\.png' is 20x30 but its image is 30x20", id="mask-size"),
    pytest.param(lambda r: Image.new("RGB", (8, 8)).save(r / "images" / "a.jpg"), "two images .* named 'a'",
                 id="same-name"),
])
def test_bad_layouts_print_the_tree_and_name_the_file(root, damage, match):
    damage(root)
    _layout_error(root, match)


def test_mask_values_checked_when_read(root):
    bad = _mask_a()
    bad[10, 10] = 4  # classes.txt has 3 classes
    bad[11, 11] = 9
    Image.fromarray(bad).save(root / "masks" / "a.png")
    seg = data.create("folder", split="seg", root=root)  # construction reads headers only
    message = _layout_error(root, r"a\.png' has class ids \[4, 9\] beyond the 3 classes of classes.txt", read=True)
    assert "255 (ignored)" in message
    assert seg[1][2].max() == 0  # the other image still reads


def test_missing_root(tmp_path):
    _layout_error(tmp_path / "absent", "is not a folder")


def test_datasets_for_and_the_class_check(root):
    net = models.create("vgg_small", num_classes=3)
    seg = datasets_for(net, f"folder:{root}", {"seg": None})["seg"]
    assert seg.num_classes == 3 and seg.image_size == 224
    with pytest.raises(ValidationError, match="8 classes but the data has 3"):
        datasets_for(models.create("vgg_small", num_classes=8), f"folder:{root}", {"seg": None})
    with pytest.raises(ValidationError, match="only to the synthetic data"):
        datasets_for(net, f"folder:{root}", {"seg": 10})


def test_apkit_list_states_the_layout_and_defaults(capsys):
    main(["list"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("folder"))
    assert all(word in line for word in ("classes.txt", "255 ignored", "image_size [224]", "ImageNet"))


# ------------------------------------------------------------------------------------------------- CLI


def _assert_data_error(code, err, *fragments):
    """Exit 1, exactly one ``apkit: error:`` line (the first) naming the problem, then the layout; no traceback."""
    lines = err.strip().splitlines()
    assert code == 1, err
    assert lines[0].startswith("apkit: error: ") and sum(line.startswith("apkit: error:") for line in lines) == 1
    assert "Traceback" not in err and "expected this layout:" in lines[0]
    assert all(fragment in lines[0] for fragment in fragments), err
    assert any("masks/NAME.png" in line for line in lines[1:])  # the tree follows the line


@pytest.fixture
def teacher_file(tmp_path):
    return models.save_checkpoint(models.create("vgg_small", num_classes=3, input_size=32), tmp_path / "t.pt")


def _audit(teacher_file, root, tmp_path):
    return ["audit", "--teacher", teacher_file, "--student", teacher_file, "--data", f"folder:{root}",
            "--device", "cpu", "--quiet", "--out", tmp_path / "audit"]


def test_cli_folder_without_masks(root, teacher_file, tmp_path, capsys):
    shutil.rmtree(root / "masks")
    code, _, err = run_cli(_audit(teacher_file, root, tmp_path), capsys)
    _assert_data_error(code, err, "no masks/ folder", str(root))
    assert not (tmp_path / "audit").exists()


def test_cli_mask_with_a_class_beyond_classes_txt(root, teacher_file, tmp_path, capsys):
    (root / "classes.txt").write_text("cat\ndog\nseal\n")
    bad = np.zeros((20, 30), dtype=np.uint8)
    bad[5, 5] = 7
    Image.fromarray(bad).save(root / "masks" / "b.png")
    code, _, err = run_cli(_audit(teacher_file, root, tmp_path), capsys)
    _assert_data_error(code, err, "b.png' has class ids [7] beyond the 3 classes of classes.txt")


def test_cli_folder_input_size_and_normalisation_are_options(root, teacher_file, tmp_path, capsys):
    """--image-size / --mean / --std reach the folder dataset: the report equals apkit.audit on it."""
    import json

    import apkit

    stats = ["--image-size", "32", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]
    code, _, err = run_cli([*_audit(teacher_file, root, tmp_path), *stats, "--resamples", "50"], capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "audit" / "report.json").read_text())
    net = models.load_checkpoint(teacher_file)
    seg = data.SegmentationFolder(root, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    report = apkit.audit(net, {"t": net}, seg, resamples=50, device="cpu", progress=False)
    loss = written["predictive"]["teacher"]["loss"]  # a continuous function of every logit
    assert loss == pytest.approx(report.predictive["teacher"]["loss"], rel=1e-6)
    # another normalisation gives other inputs, so another loss: the options were used
    other = data.SegmentationFolder(root, image_size=32)  # ImageNet's statistics
    other_loss = apkit.audit(net, {"t": net}, other, resamples=50, device="cpu", progress=False).predictive
    assert abs(other_loss["teacher"]["loss"] - loss) > 2e-6  # 3x the tolerance of the equality above
    assert data.SegmentationFolder(root).image_size == 224 and tuple(seg[0][0].shape[-2:]) == (32, 32)


@pytest.mark.parametrize("extra,fragment", [
    (["--mean", "0.5,0.5"], "mean"),
    (["--std", "a,b,c"], "--std must be comma-separated numbers"),
])
def test_cli_folder_bad_statistics(root, teacher_file, tmp_path, capsys, extra, fragment):
    code, _, err = run_cli([*_audit(teacher_file, root, tmp_path), *extra], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and fragment in err and "Traceback" not in err


def test_cli_image_size_is_for_data_read_from_files_only(teacher_file, tmp_path, capsys):
    args = ["audit", "--teacher", teacher_file, "--student", teacher_file, "--image-size", "32",
            "--device", "cpu", "--quiet", "--out", tmp_path / "audit"]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "image_size applies only to data read from files" in err and len(err.strip().splitlines()) == 1


def test_an_image_without_a_mask_has_an_unknown_label_and_mask(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    Image.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "images" / "a.jpg")
    Image.new("RGB", (30, 20)).save(tmp_path / "images" / "b.png")
    Image.new("L", (30, 20), 2).save(tmp_path / "masks" / "b.png")
    seg = data.SegmentationFolder(tmp_path, image_size=8)
    assert seg.has_mask == [False, True] and seg.sample_names == ["a.jpg", "b.png"]
    _, label, mask = seg[0]
    assert label.tolist() == [0.0, 0.0] and bool((mask == 255).all())
    assert seg[1][1].tolist() == [0.0, 1.0] and bool((seg[1][2] == 2).all())
