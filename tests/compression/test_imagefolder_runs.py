"""Compress on imagefolder:ROOT: the input size a teacher was trained at is recorded and used downstream."""

import json
import warnings

import pytest
import torch
import torchvision
from helpers import run_cli
from PIL import Image

from apkit.compression import compress_checkpoint
from apkit.core.errors import ValidationError
from apkit.models import recorded_input
from apkit.training import train_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 2)):
        for k, name in enumerate(("bar", "dot")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(40, 40, 3, generator=g) * 60).byte()
                pixels[10:30, 10:30, k] = 250
                Image.fromarray(pixels.numpy()).save(root / split / name / f"{name}{i}.jpg")
    return root


def test_a_trained_size_is_recorded_and_used_by_compress(tmp_path, root):
    teacher = tmp_path / "teacher"
    train_model("vgg_small", f"imagefolder:{root}", out_dir=teacher, overrides={"epochs": 1, "lr": 0.01},
                data_options={"image_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}, progress=False,
                device="cpu")
    assert recorded_input(teacher / "model.pt") == {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    with pytest.warns(UserWarning, match="'features.21' is 2x2 at 32 px"):
        _, record = compress_checkpoint(teacher / "model.pt", "structured", "swa", out_dir=tmp_path / "pruned",
                                        data=f"imagefolder:{root}", options={"epochs": 1}, device="cpu",
                                        progress=False)
    assert record.input == {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    assert record.task == "multiclass" and record.val["num_images"] == 4
    assert record.layers["teacher"] == "features.21" and record.layers["teacher_map"] == [2, 2]  # vgg_small's own
    assert recorded_input(tmp_path / "pruned" / "model.pt")["image_size"] == 32


def test_cli_compress_a_torchvision_teacher_on_an_image_folder(tmp_path, root, capsys):
    net = torchvision.models.resnet18(weights=None, num_classes=2)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "R"
    teacher = f"torchvision:resnet18={tmp_path / 'w.pt'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        code, text, err = run_cli(["compress", "--teacher", teacher, "--num-classes", "2",
                                   "--data", f"imagefolder:{root}", "--image-size", "48", "--mean", "0.4,0.4,0.4",
                                   "--method", "structured", "--regularizer", "swa", "--matching-layer", "layer3",
                                   "--epochs", "1", "--optimizer", "adamw", "--lr", "0.001", "--out", str(out),
                                   "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    assert "matching layers: teacher layer3 [3, 3]" in text
    record = json.loads((out / "record.json").read_text())
    assert record["input"]["image_size"] == 48 and record["input"]["mean"] == [0.4] * 3
    assert record["layers"]["teacher"] == "layer3" and record["settings"]["optimizer"] == "adamw"
    assert record["layers"]["warnings"] and "3x3" in record["layers"]["warnings"][0]
    assert recorded_input(f"torchvision:resnet18={out / 'model_state.pt'}")["image_size"] == 48
    code, _, err = run_cli(["compress", "--teacher", teacher, "--num-classes", "2", "--data", f"imagefolder:{root}",
                            "--mean", "0.4,0.4", "--out", str(tmp_path / "x")], capsys)
    assert code == 1 and "--mean must be three comma-separated numbers" in err


def test_a_student_applies_to_kd_only(tmp_path, root):
    with pytest.raises(ValidationError, match="student applies only to method 'kd'"):
        compress_checkpoint("t.pt", "structured", out_dir=tmp_path, data=f"imagefolder:{root}",
                            student="torchvision:mobilenet_v3_small")
