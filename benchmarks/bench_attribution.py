"""Speed of ``apkit.explain`` against the per-(image, class) calls of the paper's evaluation.

The paper's localization protocol explains every ground-truth class of every image; its code (and
any direct use of Captum) runs Grad-CAM once per (image, class).  apkit explains all pairs of a
batch in one forward pass and one batched backward pass.  This script times both on the same
model and inputs, in one process, and checks that they give the same maps: Grad-CAM against
Captum's ``LayerGradCam`` per pair, Excitation Backprop, LRP and RAP against ``apkit.explain``
called once per pair.

Run: ``python benchmarks/bench_attribution.py`` (VGG16-BN at 227x227, 8 images with 2-3 classes
each, about a minute on 2 CPU cores); ``--help`` for the options.
"""

from __future__ import annotations

import argparse

import torch
from _common import Measurement, print_measurements, resolve_device, timed
from captum.attr import LayerAttribution, LayerGradCam

import apkit
from apkit import models
from apkit.core.modules import get_layer


def make_pairs(num_images: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """2 or 3 distinct "ground-truth" classes per image, as (image, class) pairs."""
    pairs = []
    for image in range(num_images):
        count = 2 + int(torch.randint(0, 2, (1,), generator=generator))
        for cls in torch.randperm(num_classes, generator=generator)[:count].sort().values.tolist():
            pairs.append((image, cls))
    return torch.tensor(pairs)

def make_case(model: str, size: int, images: int, classes: int, device):
    """The attribution rows' inputs: an untrained ``model`` (seed 0), random images and their pairs, on ``device``."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    options = {"input_size": size} if model.startswith("vgg") else {}
    net = models.create(model, num_classes=classes, **options).to(device).eval()
    inputs = torch.randn(images, 3, size, size, generator=generator).to(device)
    return net, inputs, make_pairs(images, classes, generator).to(device)


def captum_loop(model, layer, images, pairs) -> torch.Tensor:
    """Grad-CAM the way the paper's evaluation runs it: one Captum call per (image, class)."""
    gradcam = LayerGradCam(model, get_layer(model, layer))
    maps = []
    for image, cls in pairs.tolist():
        attribution = gradcam.attribute(images[image:image + 1], target=cls, relu_attributions=True)
        maps.append(LayerAttribution.interpolate(attribution, tuple(images.shape[-2:]), "bilinear")[0, 0])
    return torch.stack(maps).detach()


def per_pair_loop(model, images, pairs, method: str) -> torch.Tensor:
    """``apkit.explain`` once per (image, class), the way a one-class-at-a-time evaluation runs it."""
    one = torch.zeros(1, 2, dtype=torch.long, device=pairs.device)
    maps = []
    for image, cls in pairs.tolist():
        one[0, 1] = cls
        maps.append(apkit.explain(model, images[image:image + 1], one, method=method))
    return torch.cat(maps)


def _relative_error(maps: torch.Tensor, reference: torch.Tensor) -> float:
    return float((maps - reference).abs().max() / reference.abs().max().clamp(min=1e-12))


def measure(*, model: str = "vgg16_bn", size: int = 227, images: int = 8, classes: int = 20, repeats: int = 2,
            methods: tuple[str, ...] = ("gradcam", "excitation", "lrp", "rap"),
            device: torch.device | str = "cpu") -> list[Measurement]:
    """Every method explaining all pairs in one call against one call per (image, class) pair.

    Grad-CAM is compared with Captum's ``LayerGradCam`` per pair (the paper's evaluation); the
    other methods with ``apkit.explain`` per pair.  The maps of both must agree to 1e-4 (relative
    to the largest value).
    """
    device = torch.device(device)
    net, inputs, pairs = make_case(model, size, images, classes, device)
    layer = net.attribution_layer
    operation = f"{{method}} maps of {model} at {size}x{size}, {images} images x {len(pairs)} (image, class) pairs"
    rows = []
    for method in methods:
        # Warm-up of both sides at the shapes they are timed at: kernels, allocator, hooks.
        apkit.explain(net, inputs, pairs, method=method)
        apkit.explain(net, inputs[:1], pairs[:1] * torch.tensor([0, 1], device=device), method=method)
        t_apkit, peak_apkit, maps = timed(lambda m=method: apkit.explain(net, inputs, pairs, method=m),
                                          repeats=repeats, device=device)
        if method == "gradcam":
            baseline = "Captum LayerGradCam, one call per pair"
            t_base, peak_base, reference = timed(lambda: captum_loop(net, layer, inputs, pairs), repeats=repeats,
                                                 device=device)
        else:
            baseline = "apkit.explain, one call per pair"
            t_base, peak_base, reference = timed(lambda m=method: per_pair_loop(net, inputs, pairs, m),
                                                 repeats=repeats, device=device)
        error = _relative_error(maps, reference)
        rows.append(Measurement(
            name=method, operation=operation.format(method=method), apkit="apkit.explain, all pairs in one call",
            baseline=baseline, apkit_s=t_apkit, baseline_s=t_base, equal=error <= 1e-4,
            check=f"maps: max difference {error:.1e} of the largest value (<= 1e-4)",
            apkit_peak=peak_apkit, baseline_peak=peak_base, device=str(device), repeats=repeats,
            extra={"pairs": len(pairs), "images": images, "apkit_s_per_image": t_apkit / images,
                   "apkit_s_per_pair": t_apkit / len(pairs), "layer": layer},
        ))
    return rows


def main(argv=None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16_bn")
    parser.add_argument("--size", type=int, default=227, help="input side")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", default="gradcam,excitation,lrp,rap")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    print(f"{args.model} at {args.size}x{args.size}, {args.images} images, {torch.get_num_threads()} threads, "
          f"device {device}")
    rows = measure(model=args.model, size=args.size, images=args.images, classes=args.classes,
                   repeats=args.repeats, methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
                   device=device)
    print_measurements(rows)
    print(f"\n{'method':14}{'seconds':>10}{'per image':>12}{'per map':>10}   (apkit.explain, all pairs in one call)")
    for row in rows:
        print(f"{row.name:14}{row.apkit_s:10.2f}{row.extra['apkit_s_per_image']:12.3f}"
              f"{row.extra['apkit_s_per_pair']:10.3f}")
    if any(row.equal is False for row in rows):
        raise SystemExit("apkit's batched maps differ from the per-pair maps")
    return rows


if __name__ == "__main__":
    main()
