"""apkit's attribution methods against the libraries a user would otherwise choose, on the same work.

Every row explains the same (image, class) pairs of the same model and inputs, in one process:

* ``gradcam-captum``   - Grad-CAM: ``apkit.explain`` (one forward pass per image, all pairs in one
  backward pass) vs Captum's ``LayerGradCam`` batched over the images repeated once per pair, then
  ``LayerAttribution.interpolate`` (bilinear);
* ``gradcam-pgc``      - Grad-CAM vs pytorch-grad-cam's ``GradCAM``, batched the same way (it also
  min-max scales each map and resizes it with OpenCV);
* ``lrp-zennit``       - LRP with the same rules as apkit's (z+ for convolutions and linear layers,
  z^B for the first layer with each image's bounds, winner-take-all max-pooling) vs zennit's
  composite of those rules, batched over repeated images, on a model whose BatchNorms zennit
  merged into the convolutions (so that both sides run the very same network);
* ``excitation-torchray`` - Excitation Backprop vs TorchRay's ``excitation_backprop``, batched over
  repeated images, then clamped and upsampled as apkit does.

A peer that is not installed (``pip install -e .[bench]`` installs them all) gives a row that says so
instead of failing.  The maps of both sides must agree to 1e-4 of their largest value.

Run:  python benchmarks/bench_peers.py [--model vgg16_bn] [--size 227] [--images 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import Measurement, print_measurements, resolve_device, timed
from bench_attribution import make_case

import apkit
from apkit.attribution import GradCAM
from apkit.core.modules import get_layer

TOLERANCE = 1e-4

# name -> (import name, pip name)
PEERS = {"captum": ("captum", "captum"), "pgc": ("pytorch_grad_cam", "grad-cam"),
         "zennit": ("zennit", "zennit"), "torchray": ("torchray", "torchray")}


def peer_missing(key: str) -> str | None:
    """Why the peer ``key`` cannot run here, or None when it imports."""
    module, package = PEERS[key]
    if importlib.util.find_spec(module) is None:
        return f"{package} is not installed; pip install -e .[bench] (or {package}) to add this row"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchRay reads its version the old way
            importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a peer that is installed but broken here
        return f"{package} is installed but does not import here ({exc}): treated as not installed"
    return None


def _relative_error(maps: torch.Tensor, reference: torch.Tensor) -> float:
    maps, reference = maps.detach().double().cpu(), reference.detach().double().cpu()
    return float((maps - reference).abs().max() / reference.abs().max().clamp(min=1e-12))


def _upsample(layer_maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(layer_maps, size=size, mode="bilinear", align_corners=False)[:, 0]


# ------------------------------------------------------------------------------------------- the peers


def captum_gradcam(net, layer: str, inputs, pairs) -> torch.Tensor:
    """Captum's LayerGradCam on the images repeated once per pair: one forward and backward pass."""
    from captum.attr import LayerAttribution, LayerGradCam

    gradcam = LayerGradCam(net, get_layer(net, layer))
    attribution = gradcam.attribute(inputs[pairs[:, 0]], target=pairs[:, 1], relu_attributions=True)
    return LayerAttribution.interpolate(attribution, tuple(inputs.shape[-2:]), "bilinear")[:, 0].detach()


def pgc_gradcam(net, layer: str, inputs, pairs) -> torch.Tensor:
    """pytorch-grad-cam's GradCAM on the images repeated once per pair (maps scaled to [0, 1])."""
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in pairs[:, 1].tolist()]
    with PgcGradCAM(model=net, target_layers=[get_layer(net, layer)]) as cam:
        return torch.from_numpy(cam(input_tensor=inputs[pairs[:, 0]], targets=targets))


def pgc_scaled(layer_maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Layer maps put through pytorch-grad-cam's own post-processing (scale, resize, scale again)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    cams = layer_maps[:, 0].detach().cpu().numpy()
    return torch.from_numpy(scale_cam_image(scale_cam_image(cams, (size[1], size[0]))))


def zennit_model(net):
    """A copy of ``net`` whose BatchNorms zennit merged into the convolutions, left as exact identities, and
    whose activations run out of place."""
    from zennit.canonizers import SequentialMergeBatchNorm

    merged = copy.deepcopy(net)
    SequentialMergeBatchNorm().apply(merged)  # the handles are dropped: the merge stays
    for module in merged.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 0.0
        if getattr(module, "inplace", False) is True:
            module.inplace = False  # zennit's hooks need the activations' inputs intact
    return merged.eval()


def zennit_lrp(net, inputs, pairs, num_classes: int, canonizers: tuple = ()) -> torch.Tensor:
    """zennit's LRP with apkit's rules, on the images repeated once per pair, as apkit's maps (``canonizers``:
    zennit canonizers applied while it runs, e.g. :func:`block_canonizers`)."""
    from zennit.attribution import Gradient
    from zennit.composites import SpecialFirstLayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import Norm, Pass, ZBox, ZPlus
    from zennit.types import Activation, AvgPool, BatchNorm, Convolution, Linear

    x = inputs[pairs[:, 0]]
    low, high = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)  # each image's bounds
    stabilizer = 1e-12  # zennit adds it to denominators; apkit divides exactly (0 where 0)
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (Sum, Norm(stabilizer=stabilizer)), (AvgPool, Norm(stabilizer=stabilizer)),
                   (BatchNorm, Pass()), (Linear, ZPlus(stabilizer=stabilizer, zero_params="bias"))],
        first_map=[(Convolution, ZBox(low, high, stabilizer=stabilizer, zero_params="bias"))],
        canonizers=list(canonizers),
    )
    one_hot = F.one_hot(pairs[:, 1], num_classes).to(x.dtype)
    with Gradient(net, composite) as attributor:
        logits, relevance = attributor(x.clone(), lambda out: out * one_hot)
    # apkit's evaluation map: summed over colour channels, flipped for a negative target logit.
    sign = torch.where(logits[torch.arange(len(pairs), device=pairs.device), pairs[:, 1]] < 0, -1.0, 1.0)
    return (relevance.sum(1) * sign.view(-1, 1, 1)).detach()


def _sum(module, *terms):
    """``terms[0] + terms[1] + ...`` through the block's zennit ``Sum`` module, so that its rule applies."""
    return module.canonizer_sum(torch.stack(terms, dim=-1))


def _inverted_residual_forward(self, x):
    return _sum(self, x, self.conv(x)) if self.use_res_connect else self.conv(x)


def _mobilenet_v2_forward(self, x):
    return self.classifier(torch.flatten(self.canonizer_pool(self.features(x)), 1))


def mobilenet_v2_canonizer():
    """A zennit canonizer for torchvision's MobileNetV2, as zennit's ``ResNetCanonizer`` for ResNets: the
    residual sums go through a ``Sum`` module and the global average pool through an ``AdaptiveAvgPool2d``
    module (torchvision calls the functional one), so that the proportional rule applies to both."""
    from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def attributes(_name, module):
        if isinstance(module, InvertedResidual):
            return {"forward": _inverted_residual_forward.__get__(module), "canonizer_sum": Sum()}
        if isinstance(module, MobileNetV2):
            return {"forward": _mobilenet_v2_forward.__get__(module),
                    "canonizer_pool": torch.nn.AdaptiveAvgPool2d(1)}
        return None

    return AttributeCanonizer(attributes)


def block_canonizers(model: str) -> list:
    """zennit's canonizers for the residual blocks of ``model`` (its BatchNorms are merged beforehand)."""
    if model.startswith("resnet"):
        from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

        return [ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()]
    if model == "mobilenet_v2":
        return [mobilenet_v2_canonizer()]
    return []


def torchray_excitation(net, layer: str, inputs, pairs) -> torch.Tensor:
    """TorchRay's excitation backprop on the images repeated once per pair, clamped and upsampled."""
    from torchray.attribution.excitation_backprop import excitation_backprop

    saliency = excitation_backprop(net, inputs[pairs[:, 0]], pairs[:, 1].tolist(), saliency_layer=layer)
    return _upsample(saliency.clamp(min=0), tuple(inputs.shape[-2:])).detach()


# ------------------------------------------------------------------------------------------- the rows


def _compare(row: Measurement, ours: Callable[[], torch.Tensor], theirs: Callable[[], torch.Tensor],
             check: Callable[[torch.Tensor, torch.Tensor], tuple[float, str]], *, repeats: int, device) -> None:
    """Warm both sides up, time them, and fill ``row`` with the times, the peaks and the value check."""
    ours(), theirs()  # warm-up at the timed shapes: kernels, allocator, hooks
    row.apkit_s, row.apkit_peak, mine = timed(ours, repeats=repeats, device=device)
    row.baseline_s, row.baseline_peak, reference = timed(theirs, repeats=repeats, device=device)
    error, what = check(mine, reference)
    row.equal, row.check, row.repeats = error <= TOLERANCE, what, repeats


def measure(*, model: str = "vgg16_bn", size: int = 227, images: int = 8, classes: int = 20, repeats: int = 2,
            device: torch.device | str = "cpu", rows: tuple[str, ...] = ("gradcam-captum", "gradcam-pgc",
                                                                          "lrp-zennit", "excitation-torchray")
            ) -> list[Measurement]:
    """Each of apkit's methods against its peer on the same pairs; a missing peer's row is skipped."""
    device = torch.device(device)
    net, inputs, pairs = make_case(model, size, images, classes, device)
    layer, hw = net.attribution_layer, (size, size)
    what = f"maps of {model} at {size}x{size}, {images} images x {len(pairs)} (image, class) pairs"
    one_call = "apkit.explain, all pairs in one call"

    def maps_error(mine, reference):
        error = _relative_error(mine, reference)
        return error, f"maps: max difference {error:.1e} of the largest value (<= {TOLERANCE:g})"

    specs = {
        "gradcam-captum": ("captum", f"gradcam {what}", one_call,
                           "Captum LayerGradCam, batched over the images repeated per pair",
                           lambda: apkit.explain(net, inputs, pairs, method="gradcam"),
                           lambda: captum_gradcam(net, layer, inputs, pairs), maps_error),
        "gradcam-pgc": ("pgc", f"gradcam {what}", one_call,
                        "pytorch-grad-cam GradCAM, batched over the images repeated per pair",
                        lambda: apkit.explain(net, inputs, pairs, method="gradcam"),
                        lambda: pgc_gradcam(net, layer, inputs, pairs), None),
        "lrp-zennit": ("zennit", f"lrp {what} (BatchNorm merged)", one_call,
                       "zennit, the same rules (z+, z^B first layer), batched over repeated images",
                       None, None, maps_error),
        "excitation-torchray": ("torchray", f"excitation {what}", one_call,
                                "TorchRay excitation_backprop, batched over repeated images, clamped + upsampled",
                                lambda: apkit.explain(net, inputs, pairs, method="excitation"),
                                lambda: torchray_excitation(net, layer, inputs, pairs), maps_error),
    }
    out = []
    for name in rows:
        peer, operation, apkit_label, baseline, ours, theirs, check = specs[name]
        row = Measurement(name=name, operation=operation, apkit=apkit_label, baseline=baseline, device=str(device))
        out.append(row)
        reason = peer_missing(peer)
        if reason is not None:
            row.skipped, row.check = True, reason
            continue
        if name == "gradcam-pgc":
            # pytorch-grad-cam scales every map to [0, 1]; apkit's own layer maps put through the same
            # scaling and OpenCV resize must give its maps.
            def check(_mine, reference):
                scaled = pgc_scaled(GradCAM(net).attribute(inputs, pairs), hw)
                error = float((scaled - reference).abs().max())
                return error, (f"apkit's layer maps through pytorch-grad-cam's scaling and resize: max "
                               f"difference {error:.1e} (<= {TOLERANCE:g}, maps in [0, 1])")
        if name == "lrp-zennit":
            merged = zennit_model(net)
            ours = lambda merged=merged: apkit.explain(merged, inputs, pairs, method="lrp")  # noqa: E731
            theirs = lambda merged=merged: zennit_lrp(merged, inputs, pairs, classes)  # noqa: E731
        _compare(row, ours, theirs, check, repeats=repeats, device=device)
        row.extra = {"pairs": len(pairs), "images": images, "layer": layer}
    return out


def _relative_maps_error(mine, reference) -> tuple[float, str]:
    error = _relative_error(mine, reference)
    return error, f"maps: max difference {error:.1e} of the largest value (<= {TOLERANCE:g})"


def _cnn_case(model: str, *, size: int, images: int, classes: int, device: torch.device):
    """A torchvision ``model`` with random weights (seed 0), random images and one random class per image."""
    import torchvision

    torch.manual_seed(0)
    net = getattr(torchvision.models, model)(weights=None, num_classes=classes).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(images, 3, size, size, generator=generator).to(device)
    pairs = torch.stack([torch.arange(images), torch.randint(0, classes, (images,), generator=generator)], 1)
    # BatchNorm statistics of these images, so that activations stay of order one through the random layers:
    # with the initial statistics they shrink to where zennit's stabilizer (1e-12) changes MobileNetV2's maps.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average: exactly this batch's statistics
    with torch.no_grad():
        net.train()(inputs)
    return net.eval(), inputs, pairs.to(device)


def measure_cnns(*, models: tuple[str, ...] = ("resnet50", "mobilenet_v2"), size: int = 224, images: int = 8,
                 classes: int = 1000, repeats: int = 2, device: torch.device | str = "cpu") -> list[Measurement]:
    """LRP against zennit on torchvision CNNs (random weights, seed 0), one class per image.

    Both sides explain the same copy of each model, its BatchNorms merged by zennit's
    ``SequentialMergeBatchNorm``; zennit runs with its canonizers for the residual blocks
    (``ResNetCanonizer``'s block canonizers; for MobileNetV2 :func:`mobilenet_v2_canonizer`), so that
    residual sums and the global average pool get the proportional rule that apkit applies.
    """
    device = torch.device(device)
    rows = []
    for model in models:
        row = Measurement(name=f"lrp-zennit-{model}", apkit="apkit.explain",
                          operation=f"lrp maps of {model} at {size}x{size}, {images} images x 1 class "
                          "(BatchNorm merged)", device=str(device),
                          baseline="zennit, the same rules (z+, z^B first layer) and its canonizers")
        rows.append(row)
        reason = peer_missing("zennit")
        if reason is not None:
            row.skipped, row.check = True, reason
            continue
        net, inputs, pairs = _cnn_case(model, size=size, images=images, classes=classes, device=device)
        _compare_lrp(row, zennit_model(net), inputs, pairs, block_canonizers(model), repeats=repeats)
        row.extra = {"pairs": images, "images": images, "model": model}
    return rows


def _compare_lrp(row: Measurement, merged, inputs, pairs, canonizers: list, *, repeats: int) -> None:
    classes = merged(inputs[:1]).shape[1]
    _compare(row, lambda: apkit.explain(merged, inputs, pairs, method="lrp"),
             lambda: zennit_lrp(merged, inputs, pairs, classes, canonizers=canonizers), _relative_maps_error,
             repeats=repeats, device=inputs.device)


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16_bn")
    parser.add_argument("--size", type=int, default=227, help="input side")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    rows = measure(model=args.model, size=args.size, images=args.images, classes=args.classes,
                   repeats=args.repeats, device=resolve_device(args.device))
    print_measurements(rows)
    if any(row.equal is False for row in rows):
        raise SystemExit("apkit's maps differ from a peer's")
    return rows


if __name__ == "__main__":
    main()
