"""
Shared settings and a small teacher for the examples
====================================================

Several examples need a trained model to explain, compress or audit.  :func:`teacher` trains
one on the embedded synthetic shapes with apkit's own API (``models.create`` +
``training.fit`` + ``models.save_checkpoint``) and caches it under the output folder, so the
examples run after the first one reuse it.

Two environment variables steer every example:

* ``APKIT_FAST=1``: tiny settings (32x32 images, a few thousand of them, seconds per model on a
  CPU) -- enough to see how the API fits together, not enough for trustworthy numbers;
* ``APKIT_EXAMPLES_OUT``: where figures, tables and the cached teacher go (default
  ``examples/out``).
"""

import os
from pathlib import Path

import torch

from apkit import models
from apkit.data import SyntheticShapes
from apkit.training import RECIPES, fit

FAST = os.environ.get("APKIT_FAST", "0") not in ("", "0")
OUT = Path(os.environ.get("APKIT_EXAMPLES_OUT") or Path(__file__).resolve().parent / "out")
DEVICE = "cpu"  # every example runs on a laptop CPU; "cuda" works too

IMAGE_SIZE = 32 if FAST else 64
SIZES = {"train": 2000, "val": 300, "seg": 60} if FAST else {"train": 4000, "val": 500, "seg": 500}
# The "synthetic" recipe of `apkit train`: SGD with a cosine schedule, about 3 minutes on 2 CPU cores at 64x64.
TEACHER_TRAINING = RECIPES.get("synthetic")
if FAST:
    TEACHER_TRAINING = TEACHER_TRAINING.replace(epochs=min(TEACHER_TRAINING.epochs, 8))


def dataset(split: str, num_samples: int | None = None) -> SyntheticShapes:
    """The synthetic shapes: split "train", "val" or "seg" (the held-out images with masks)."""
    return SyntheticShapes(split, num_samples=num_samples or SIZES[split], image_size=IMAGE_SIZE)


def output(name: str) -> Path:
    """A path under the output folder (created if needed)."""
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT / name


def teacher() -> torch.nn.Module:
    """A small VGG trained on the synthetic shapes; trained once, then loaded from the output folder."""
    path = output(f"teacher-{IMAGE_SIZE}px{'-fast' if FAST else ''}.pt")
    if path.is_file():
        return models.load_checkpoint(path).eval()
    print(f"Training the teacher ({SIZES['train']} images of {IMAGE_SIZE}x{IMAGE_SIZE}, "
          f"{TEACHER_TRAINING.epochs} epochs); it is cached in {path}")
    torch.manual_seed(0)  # the initial weights
    net = models.create("vgg_small", num_classes=8, input_size=IMAGE_SIZE)
    result = fit(net, dataset("train"), TEACHER_TRAINING, val_set=dataset("val"), device=DEVICE, seed=0,
                 channels_last=DEVICE == "cpu", progress=False)  # channels-last: faster CPU convolutions
    print(f"Teacher: per-image mAP {result.best_metrics['map_image']:.3f} on {SIZES['val']} validation images")
    models.save_checkpoint(net, path, meta={"val": result.best_metrics})
    return net.eval()
