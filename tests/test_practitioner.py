"""The practitioner's run: your own ResNet-18, trained with plain PyTorch on an ImageFolder of JPEGs at 64 px,
compressed with apkit from the command line and through the API, then audited without masks.

Each command is timed (``pytest -s`` prints the times); the audit's report.html is rendered in headless
Chromium (skipped, saying why, where there is none), which must show the verdict, file names and class names.
"""

import json
import re
import shutil
import subprocess
import time
import warnings

import numpy as np
import pytest
import torch
import torchvision
from helpers import run_cli
from PIL import Image, ImageDraw
from torchvision import transforms as T

from apkit.compression import compress
from apkit.models import recorded_input

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CLASSES = ("circle", "square", "triangle")
SIZE = 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TIMES: dict[str, float] = {}


def _draw(rng, cls):
    image = Image.fromarray(rng.integers(0, 90, (SIZE, SIZE, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    cx, cy = (int(v) for v in rng.integers(18, SIZE - 18, 2))
    r = int(rng.integers(9, 15))
    colour = tuple(int(v) for v in rng.integers(140, 256, 3))
    if cls == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif cls == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx - r, cy + r), (cx + r, cy + r), (cx, cy - r)], fill=colour)
    return image


@pytest.fixture(scope="module")
def practice(tmp_path_factory):
    """An ImageFolder of JPEGs (3 classes, train/val) and a torchvision ResNet-18 trained on it with plain PyTorch."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 15)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                _draw(rng, cls).save(root / split / cls / f"{cls}_{i:03d}.jpg", quality=90)
    transform = T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor(), T.Normalize(MEAN, STD)])
    train = torchvision.datasets.ImageFolder(root / "train", transform=transform)
    val = torchvision.datasets.ImageFolder(root / "val", transform=transform)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=len(CLASSES))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    began = time.perf_counter()
    for _ in range(6):
        net.train()
        for images, labels in torch.utils.data.DataLoader(train, batch_size=20, shuffle=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(images), labels).backward()
            optimizer.step()
    TIMES["train (plain PyTorch, 6 epochs)"] = time.perf_counter() - began
    net.eval()
    weights = root / "W.pt"
    torch.save(net.state_dict(), weights)
    return {"root": root, "weights": weights, "net": net, "train": train, "val": val}


@pytest.mark.parametrize("regularizer", ["swa", "none"])
def test_cli_compress_on_the_image_folder(practice, tmp_path_factory, capsys, regularizer):
    out = tmp_path_factory.mktemp(f"R-{regularizer}")
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        code, text, err = run_cli(["compress", "--teacher", f"torchvision:resnet18={practice['weights']}",
                                   "--num-classes", "3", "--data", f"imagefolder:{practice['root']}",
                                   "--image-size", str(SIZE), "--method", "structured", "--regularizer", regularizer,
                                   "--out", str(out), "--device", "cpu", "--quiet"], capsys)
    TIMES[f"apkit compress --regularizer {regularizer}"] = time.perf_counter() - began
    assert code == 0, err
    record = json.loads((out / "record.json").read_text())
    assert record["task"] == "multiclass" and record["val"]["num_images"] == 45
    assert 0.0 <= record["val"]["top1"] <= 1.0 and "top1" in text
    assert record["input"] == {"image_size": SIZE, "mean": list(MEAN), "std": list(STD)}
    assert record["params"] < 0.2 * record["teacher"]["params"]  # 60 % of the filters gone: about 0.16
    assert record["macs"] < record["teacher"]["macs"]
    if regularizer == "swa":
        assert record["layers"]["teacher"] == "layer4" and record["layers"]["teacher_map"] == [2, 2]
        assert "smaller than 4x4" in record["layers"]["warnings"][0]
    else:
        assert "layers" not in record
    assert recorded_input(f"torchvision:resnet18={out / 'model_state.pt'}")["image_size"] == SIZE
    practice[f"student_{regularizer}"] = out / "model_state.pt"


def test_api_compress_with_a_plain_torchvision_image_folder(practice):
    teacher_top1 = _top1(practice["net"], practice["val"])
    for regularizer in ("swa", "none"):
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model, record = compress(practice["net"], "structured", regularizer, train_set=practice["train"],
                                     val_set=practice["val"], device="cpu", progress=False)
        TIMES[f"compress(...) API, {regularizer}"] = time.perf_counter() - began
        assert record.task == "multiclass" and record.input["image_size"] == SIZE
        assert record.input["mean"] == list(MEAN)  # read off the transform's Normalize
        assert record.val["top1"] == pytest.approx(_top1(model, practice["val"]))
        assert model(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 3)
    assert 0.0 <= teacher_top1 <= 1.0


def _top1(model, dataset):
    with torch.no_grad():
        hits = [(model.eval()(x).argmax(1) == y).sum().item()
                for x, y in torch.utils.data.DataLoader(dataset, batch_size=64)]
    return sum(hits) / len(dataset)


# ------------------------------------------------------------------------------------------------------------------
# The audit half: mask-free audit of both students, gates on agreement and cos, report.html with the verdict, file
# names and class names (rendered in Chromium).
# ------------------------------------------------------------------------------------------------------------------
BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
               None)


def test_a_misspelt_gate_fails_before_any_work(practice, tmp_path, capsys):
    began = time.perf_counter()
    code, _, err = run_cli(["audit", "--teacher", f"torchvision:resnet18={practice['weights']}",
                            "--student", f"torchvision:resnet18={practice['weights']}", "--num-classes", "3",
                            "--data", f"imagefolder:{practice['root']}", "--split", "val",
                            "--fail-under", "agremeent=0.5", "--out", str(tmp_path / "audit")], capsys)
    assert code == 1 and "agremeent" in err
    assert time.perf_counter() - began < 10


@pytest.mark.parametrize("regularizer", ["swa", "none"])
def test_cli_audit_without_masks(practice, tmp_path, capsys, regularizer):
    student = practice.get(f"student_{regularizer}")
    if student is None:
        pytest.skip("run with test_cli_compress_on_the_image_folder")
    began = time.perf_counter()
    code, text, err = run_cli(["audit", "--teacher", f"torchvision:resnet18={practice['weights']}",
                               "--student", f"torchvision:resnet18={student}", "--num-classes", "3",
                               "--data", f"imagefolder:{practice['root']}", "--split", "val",
                               "--fail-under", "agreement=0.0", "--fail-under", "cos=0.0",
                               "--out", str(tmp_path), "--device", "cpu", "--quiet"], capsys)
    TIMES[f"apkit audit ({regularizer} student)"] = time.perf_counter() - began
    assert code == 0, err
    assert "top1" in text and "agreement" in text
    written = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert {"top1", "top5"} <= set(written["predictive"]["teacher"])
    judged = {row["gate"].split("=")[0] for row in written["verdict"]}  # "agreement=0" -> "agreement"
    assert all(row["passed"] for row in written["verdict"]) and judged >= {"agreement", "cos"}
    if BROWSER is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium) to render report.html")
    page = (tmp_path / "report.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'browser'}"]
    dom = subprocess.run([BROWSER, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert "Verdict" in rendered and rendered.index("Verdict") < rendered.index("<table")  # at the top
    assert "agreement" in rendered and "passed" in rendered.lower()
    assert any(f"{c}/{c}_0" in rendered for c in CLASSES)  # file names, not image indices
    # Class names, not class indices: the explained classes of the shown pairs are named.
    assert any(name in rendered for name in CLASSES) and re.search(r"\bclass \d", rendered) is None
    shot = subprocess.run([BROWSER, *flags, "--window-size=1200,1600", f"--screenshot={tmp_path / 'report.png'}",
                           page], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and (tmp_path / "report.png").stat().st_size > 10_000, shot.stderr[-2000:]


def test_times_of_the_run():
    """Prints the time of each command of the run (pytest -s shows it)."""
    for name, seconds in TIMES.items():
        print(f"{name}: {seconds:.1f} s")
