"""
Compress your own model on your own image folder
================================================

Your data in torchvision's ImageFolder layout (``ROOT/train/<class>/*.jpg``, ``ROOT/val/...``), no
masks; your torchvision ResNet-18, trained here with a plain ``torchvision.datasets.ImageFolder``
and ``apkit.training.fit`` (AdamW).  It is pruned twice, 60 % of the filters of every conv, naively
and with SWA matching the teacher's Grad-CAM at ``layer3`` (``layer4`` is 2x2 at 64 px: apkit would
warn), then both students are audited against it on ``imagefolder:ROOT`` without masks.  In the
figure, each row is one validation image (file and class), the columns the three models' maps.
"""

import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from _common import DEVICE, FAST, output
from PIL import Image, ImageDraw
from torchvision import transforms as T

import apkit
from apkit.compression import compress
from apkit.data import from_spec
from apkit.training import Recipe, fit
from apkit.viz import denormalize, plot_attribution_grid

SIZE, MEAN, STD = 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def shape(cls: str, x: int, y: int, r: int) -> list:
    """The corners of a triangle or a square, or a 24-gon for a circle, around (x, y)."""
    corners = {"triangle": 3, "square": 4, "circle": 24}[cls]
    angles = np.pi / 4 + 2 * np.pi * np.arange(corners) / corners + (np.pi / 4 if cls == "triangle" else 0)
    return [(x + r * np.cos(a), y + r * np.sin(a)) for a in angles]


def write_image_folder(root: Path, per_class: dict) -> None:
    """Stand-in for your photos: one JPEG per image, in a folder per class."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for cls in ("circle", "square", "triangle"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                image = Image.fromarray(rng.integers(0, 90, (SIZE, SIZE, 3), dtype=np.uint8))
                x, y, r = (int(v) for v in (*rng.integers(18, SIZE - 18, 2), rng.integers(10, 16)))
                colour = tuple(int(v) for v in rng.integers(140, 256, 3))
                ImageDraw.Draw(image).polygon(shape(cls, x, y, r), fill=colour)
                image.save(root / split / cls / f"{cls}_{i:03d}.jpg", quality=90)


with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    write_image_folder(root, {"train": 40, "val": 15} if FAST else {"train": 200, "val": 50})
    transform = T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor(), T.Normalize(MEAN, STD)])
    train, val = (torchvision.datasets.ImageFolder(root / s, transform=transform) for s in ("train", "val"))
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18(num_classes=3)  # or yours: teacher.load_state_dict(torch.load(...))
    fit(teacher, train, Recipe(epochs=4 if FAST else 15, lr=1e-3, batch_size=20, optimizer="adamw"), val_set=val,
        device=DEVICE, progress=False)
    students = {}
    for regularizer in ("none", "swa"):
        students[regularizer], record = compress(
            teacher, "structured", regularizer, train_set=train, val_set=val, device=DEVICE, progress=False,
            epochs=3 if FAST else 10, optimizer="adamw", lr=1e-3,
            **({"teacher_layer": "layer3"} if regularizer == "swa" else {}))
        print(f"pruned, {regularizer}: {record.params:,} parameters (teacher {record.teacher['params']:,}), "
              f"val top-1 {record.val['top1']:.3f}, matched at {(record.layers or {}).get('teacher', '-')}")
    folder = from_spec(f"imagefolder:{root}", split="val", image_size=SIZE)  # the same images, no masks
    report = apkit.audit(teacher, students, folder, device=DEVICE, progress=False)
    print(report.to_markdown())
    images = torch.stack([folder[i][0] for i in range(0, len(folder), max(1, len(folder) // 6))][:6])
    maps = {name: apkit.explain(model, images, layer="layer3")  # each model's own top-1 class
            for name, model in {"teacher": teacher, "naive": students["none"], "SWA": students["swa"]}.items()}
    names = [folder.sample_names[i] for i in range(0, len(folder), max(1, len(folder) // 6))][:6]
    path = plot_attribution_grid(denormalize(images, MEAN, STD), maps, output("compress_own_model.png"),
                                 row_titles=names)
    print(f"Saved {path}: Grad-CAM at layer3 of the teacher and its two pruned students, per validation file.")
