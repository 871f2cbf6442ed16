"""
Bring your own torchvision ResNet and an image folder with masks
================================================================

apkit works with any ``torch.nn.Module`` and any map-style dataset of ``(image, label, mask)``
items.  Here a temporary folder holds PNG images in ``images/`` and PNG masks of the same names in
``masks/`` (0 = background, ``k + 1`` = class ``k``, 255 = void); a dozen-line ``Dataset`` reads
it; a plain torchvision ResNet-18 is trained with ``apkit.training.fit`` (or load your weights with
``model.load_state_dict``), explained at layers named as in ``model.named_modules()`` and scored
against the masks.  In the figure, compare Grad-CAM at ``layer4`` (2x2 for 64x64 inputs), at
``layer3`` (4x4) and LRP (pixels) with the mask of the class explained (last column).  A ResNet
trained from scratch on a few hundred small images learns little: expect rough maps in fast mode.
"""

import tempfile
from pathlib import Path

import torch
from _common import DEVICE, FAST, output
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.models import resnet18
from torchvision.transforms.functional import normalize, pil_to_tensor, to_tensor

import apkit
from apkit.data import SyntheticShapes
from apkit.evaluation import localization_scores
from apkit.training import Recipe, fit
from apkit.viz import denormalize, plot_attribution_grid


def write_folder(folder: Path, split: str, count: int) -> Path:
    """Stand-in for your own data: RGB PNG images and PNG masks with the same file names."""
    (folder / "masks").mkdir(parents=True)
    (folder / "images").mkdir()
    shapes = SyntheticShapes(split, num_samples=count, image_size=64)
    for i in range(count):
        image, _, mask = shapes.raw(i)  # uint8 (3, H, W) and (H, W)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / "images" / f"{i:05d}.png")
        Image.fromarray(mask.numpy()).save(folder / "masks" / f"{i:05d}.png")
    return folder


class FolderWithMasks(Dataset):
    """``(image, multi-hot label, mask)`` items from ``images/*.png`` and ``masks/*.png``."""

    classes, task, num_classes, image_size = SyntheticShapes.classes, "multilabel", 8, 64
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the usual torchvision normalisation

    def __init__(self, folder: Path):
        self.images = sorted((folder / "images").glob("*.png"))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        path = self.images[index]
        image = normalize(to_tensor(Image.open(path).convert("RGB")), self.mean, self.std)
        mask = pil_to_tensor(Image.open(path.parent.parent / "masks" / path.name))[0]  # uint8 (H, W)
        label = torch.bincount(mask.flatten().long(), minlength=256)[1:self.num_classes + 1].gt(0).float()
        return image, label, mask


with tempfile.TemporaryDirectory() as tmp:
    sizes = {"train": 400, "val": 100, "seg": 40} if FAST else {"train": 2000, "val": 500, "seg": 300}
    train, val, seg = (FolderWithMasks(write_folder(Path(tmp) / k, k, n)) for k, n in sizes.items())
    torch.manual_seed(0)
    model = resnet18(num_classes=8)  # or your own, with model.load_state_dict(...)
    result = fit(model, train, Recipe(epochs=3 if FAST else 8, batch_size=32, lr=0.05, schedule="cosine"),
                 val_set=val, device=DEVICE, progress=False)
    print(f"ResNet-18: per-image mAP {result.best_metrics['map_image']:.3f} on {len(val)} validation images")
    for layer in ("layer4", "layer3"):
        scores = localization_scores(model, seg, layer=layer, device=DEVICE, progress=False).summary()
        print(f"Grad-CAM at {layer}: AUC {scores['auc']:.3f}, pointing {scores['pointing']:.3f}")
    images, labels, masks = next(iter(DataLoader(seg, batch_size=6)))
    with torch.no_grad():
        classes = model.eval()(images).masked_fill(labels == 0, float("-inf")).argmax(1)
    maps = {f"Grad-CAM {layer}": apkit.explain(model, images, classes, layer=layer) for layer in ("layer4", "layer3")}
    maps["LRP"] = apkit.explain(model, images, classes, method="lrp")
    maps["mask"] = (masks == (classes + 1).view(-1, 1, 1)).float()
    path = plot_attribution_grid(denormalize(images, seg.mean, seg.std), maps, output("own_resnet_folder.png"),
                                 row_titles=[seg.classes[k] for k in classes])
    print(f"Saved {path}: the ResNet's maps at two layers and with LRP, next to the ground truth.")
