"""Speed of ``apkit.explain`` against the per-(image, class) Captum loop of the paper's evaluation.

The paper's localization protocol explains every ground-truth class of every image; its code (and
any direct use of Captum) runs Grad-CAM once per (image, class).  apkit explains all pairs of a
batch in one forward pass and one batched backward pass.  This script times both on the same
model and inputs, in one process, checks that they give the same maps, and then times each
apkit method per map.

Run: ``python benchmarks/bench_attribution.py`` (VGG16-BN at 227x227, 8 images with 2-3 classes
each, about a minute on 2 CPU cores); ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import time

import torch
from captum.attr import LayerAttribution, LayerGradCam

import apkit
from apkit import models


def make_pairs(num_images: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """2 or 3 distinct "ground-truth" classes per image, as (image, class) pairs."""
    pairs = []
    for image in range(num_images):
        count = 2 + int(torch.randint(0, 2, (1,), generator=generator))
        for cls in torch.randperm(num_classes, generator=generator)[:count].sort().values.tolist():
            pairs.append((image, cls))
    return torch.tensor(pairs)


def captum_loop(model, layer, images, pairs) -> torch.Tensor:
    """Grad-CAM the way the paper's evaluation runs it: one Captum call per (image, class)."""
    gradcam = LayerGradCam(model, models.get_layer(model, layer))
    maps = []
    for image, cls in pairs.tolist():
        attribution = gradcam.attribute(images[image:image + 1], target=cls, relu_attributions=True)
        maps.append(LayerAttribution.interpolate(attribution, tuple(images.shape[-2:]), "bilinear")[0, 0])
    return torch.stack(maps).detach()


def timed(function, repeats: int):
    """Best wall time of ``repeats`` runs (the machine may be shared) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16_bn")
    parser.add_argument("--size", type=int, default=227, help="input side")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", default="gradcam,excitation,lrp,rap")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    options = {"input_size": args.size} if args.model.startswith("vgg") else {}
    model = models.create(args.model, num_classes=args.classes, **options).to(args.device).eval()
    images = torch.randn(args.images, 3, args.size, args.size, generator=generator).to(args.device)
    pairs = make_pairs(args.images, args.classes, generator).to(args.device)
    layer = model.attribution_layer
    print(f"{args.model} at {args.size}x{args.size}, {args.images} images, {len(pairs)} (image, class) pairs, "
          f"layer {layer}, {torch.get_num_threads()} threads, device {args.device}")

    loop_time, reference = timed(lambda: captum_loop(model, layer, images, pairs), args.repeats)
    batched_time, maps = timed(lambda: apkit.explain(model, images, pairs, method="gradcam"), args.repeats)
    error = float((maps - reference).abs().max() / reference.abs().max().clamp(min=1e-12))
    if error > 1e-4:
        raise SystemExit(f"apkit and Captum Grad-CAM maps differ: max relative error {error:.2e}")
    print("\nGrad-CAM for every (image, class) pair")
    print(f"{'':34}{'seconds':>10}{'per pair':>12}")
    print(f"{'Captum LayerGradCam, per pair':34}{loop_time:10.2f}{loop_time / len(pairs):12.3f}")
    print(f"{'apkit.explain, batched':34}{batched_time:10.2f}{batched_time / len(pairs):12.3f}")
    print(f"speed-up {loop_time / batched_time:.1f}x (same maps: max relative difference {error:.1e})")

    print("\napkit.explain per method (all pairs in one call)")
    print(f"{'method':14}{'seconds':>10}{'per image':>12}{'per map':>10}")
    for method in args.methods.split(","):
        seconds, _ = timed(lambda m=method: apkit.explain(model, images, pairs, method=m), args.repeats)
        print(f"{method:14}{seconds:10.2f}{seconds / args.images:12.3f}{seconds / len(pairs):10.3f}")


if __name__ == "__main__":
    main()
