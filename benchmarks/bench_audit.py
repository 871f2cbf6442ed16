"""The attribution audit of one model: apkit's batched protocol against the paper's per-image loop.

The paper's evaluation script (METHOD §4.2) walks the segmentation set with batch size 1: one
forward pass, then for every ground-truth class of the image one Captum ``LayerGradCam`` call, a
bilinear upsampling, the first ``np.where`` arg-max for the pointing game, min-max normalisation
and scikit-learn's ``roc_curve`` + ``auc``; a pair counts when the class is predicted (logit > 0).
apkit's :func:`apkit.evaluation.localization_scores` scores the same pairs with batched
forward passes, all pairs of a batch in one Grad-CAM call and batched metrics.  This script runs
both on the same model and images (the embedded synthetic segmentation split), in one process,
and checks that they keep the same pairs and give the same AUC and pointing values.

The model is untrained, with its classifier bias raised so that every ground-truth class counts as
predicted: the cost depends on the number of pairs, not on what the weights have learnt.

Run:  python benchmarks/bench_audit.py [--model vgg16_bn] [--size 227] [--images 24] [--device cpu]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import Measurement, print_measurements, resolve_device, timed
from captum.attr import LayerAttribution, LayerGradCam
from sklearn.metrics import auc, roc_curve

from apkit import models
from apkit.data import SyntheticShapes
from apkit.evaluation import localization_scores

VOID = 255


def paper_protocol(model, dataset, layer: str, device: torch.device) -> dict[tuple[int, int], tuple[float, float]]:
    """The reference evaluation loop: ``{(image, class): (auc, hit)}`` of the kept pairs."""
    gradcam = LayerGradCam(model, models.get_layer(model, layer))
    kept = {}
    for index in range(len(dataset)):
        image, _, mask = dataset[index]
        image = image[None].to(device)
        with torch.no_grad():
            predicted = (model(image)[0] > 0).cpu().numpy()
        mask = mask.numpy()
        for value in np.unique(mask):
            if value in (0, VOID):
                continue
            cls = int(value) - 1
            objects = mask == value
            attribution = gradcam.attribute(image, target=cls, relu_attributions=True)
            heat = LayerAttribution.interpolate(attribution, tuple(image.shape[-2:]), "bilinear")[0, 0]
            heat = heat.detach().cpu().numpy()
            if np.isnan(heat).any():
                continue
            where = np.where(heat == heat.max())
            hit = float(objects[where[0][0], where[1][0]])
            heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-5)
            fpr, tpr, _ = roc_curve(objects.flatten(), heat.flatten())
            if predicted[cls]:
                kept[(index, cls)] = (float(auc(fpr, tpr)), hit)
    return kept


def apkit_protocol(model, dataset, batch_size: int, device: torch.device) -> dict[tuple[int, int], tuple[float, float]]:
    """:func:`localization_scores` (Grad-CAM, the paper's protocol): the same ``{(image, class): (auc, hit)}``."""
    result = localization_scores(model, dataset, method="gradcam", batch_size=batch_size, device=device,
                                 progress=False)
    pairs = result.pairs
    keep = pairs["kept"].nonzero().squeeze(1).tolist()
    return {(int(pairs["image"][i]), int(pairs["class"][i])): (float(pairs["auc"][i]), float(pairs["hit"][i]))
            for i in keep}


def compare(ours: dict, reference: dict) -> tuple[bool, str]:
    """Same kept pairs, AUC within 1e-4, identical pointing hits, and the same means."""
    if set(ours) != set(reference):
        return False, f"kept pairs differ: {len(ours)} (apkit) vs {len(reference)} (paper loop)"
    if not reference:
        return False, "no pair was kept; nothing was compared"
    keys = sorted(reference)
    a = np.array([ours[k] for k in keys])
    b = np.array([reference[k] for k in keys])
    auc_error = float(np.abs(a[:, 0] - b[:, 0]).max())
    flips = int((a[:, 1] != b[:, 1]).sum())
    # Float32 maps computed in a batch and one at a time differ in the last bits, which can swap two
    # nearly tied pixels of a map and move its AUC by 1 / (positives x negatives).
    equal = auc_error <= 1e-4 and flips == 0
    return equal, (f"{len(keys)} kept pairs identical; AUC max difference {auc_error:.1e} (<= 1e-4), "
                   f"{flips} pointing hits differ; mean AUC {a[:, 0].mean():.4f} vs {b[:, 0].mean():.4f}, "
                   f"pointing {a[:, 1].mean():.4f} vs {b[:, 1].mean():.4f}")


def measure(*, model: str = "vgg16_bn", size: int = 227, images: int = 24, batch_size: int = 16, repeats: int = 1,
            device: torch.device | str = "cpu") -> list[Measurement]:
    """Audit one model's Grad-CAM maps both ways on ``images`` synthetic segmentation images."""
    device = torch.device(device)
    dataset = SyntheticShapes("seg", num_samples=images, image_size=size)
    torch.manual_seed(0)
    options = {"input_size": size} if model.startswith("vgg") else {}
    net = models.create(model, num_classes=dataset.num_classes, **options).to(device).eval()
    head = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.bias.add_(10.0)  # every class predicted: all ground-truth pairs are scored
    layer = net.attribution_layer
    for i in range(len(dataset)):  # render (and cache) every image before either side is timed
        dataset[i]
    apkit_protocol(net, torch.utils.data.Subset(dataset, [0]), batch_size, device)
    paper_protocol(net, torch.utils.data.Subset(dataset, [0]), layer, device)  # warm-up of both sides
    t_apkit, peak_apkit, ours = timed(lambda: apkit_protocol(net, dataset, batch_size, device), repeats=repeats,
                                      device=device)
    t_paper, peak_paper, reference = timed(lambda: paper_protocol(net, dataset, layer, device), repeats=repeats,
                                           device=device)
    equal, check = compare(ours, reference)
    return [Measurement(
        name="audit", operation=f"Grad-CAM audit (AUC + pointing) of {model} at {size}x{size}, {images} "
                                f"segmentation images, {len(reference)} (image, class) pairs",
        apkit=f"localization_scores, batches of {batch_size}",
        baseline="paper loop: batch 1, Captum LayerGradCam per pair, sklearn per map",
        apkit_s=t_apkit, baseline_s=t_paper, equal=equal, check=check, apkit_peak=peak_apkit,
        baseline_peak=peak_paper, device=str(device), repeats=repeats,
        extra={"pairs": len(reference), "images": images},
    )]


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16_bn")
    parser.add_argument("--size", type=int, default=227, help="image side")
    parser.add_argument("--images", type=int, default=24, help="segmentation images")
    parser.add_argument("--batch-size", type=int, default=16, help="apkit's images per batch")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    rows = measure(model=args.model, size=args.size, images=args.images, batch_size=args.batch_size,
                   repeats=args.repeats, device=resolve_device(args.device))
    print_measurements(rows)
    if rows[0].equal is False:
        raise SystemExit("apkit's audit and the paper loop disagree")
    return rows


if __name__ == "__main__":
    main()
