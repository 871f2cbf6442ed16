"""apkit's deletion and ROAD against Quantus and pytorch-grad-cam, on the same model, images and maps.

Every row scores the same maps of the same images, in one process; the peers compute image by
image (and step by step) on the CPU, apkit batches all perturbed images of a chunk into one
forward pass on the device:

* ``deletion-quantus`` - :func:`apkit.evaluation.deletion_curve` (constant baseline 0) vs Quantus's
  ``PixelFlipping`` with the same baseline.  Quantus flips ``features_in_step`` of the C*H*W entries
  of the channel-broadcast map per step, and its step must divide H*W, so to remove the same pixels
  it takes C steps (C forward passes) for each of apkit's; every C-th point of its curve is compared
  with apkit's curve;
* ``road-quantus``     - :func:`apkit.evaluation.road` (MoRF) vs Quantus's ``ROAD`` at the same
  percentages, both without noise (Quantus draws it from NumPy's global generator).  Quantus 0.6's
  ROAD fails on three-channel images (it indexes the broadcast map's C*H*W positions into the H*W
  pixels), so this row runs on one-channel images that the model repeats to three channels, on
  both sides.  Quantus scores whether the top-1 class is still the target; the check computes that
  from apkit's ROAD images;
* ``road-pgc``         - :func:`apkit.evaluation.road` vs pytorch-grad-cam's ROAD
  (``RemoveMostRelevantFirst`` with a noise-free ``NoisyLinearImputer``) at each percentage, with
  its percentile placed between the two pixels that bound apkit's removed set;
* ``imputation-smooth-quantus`` - the imputation alone (no model) on smooth maps, the shape of a
  Grad-CAM map (a 7x7 random grid upsampled bilinearly): :func:`apkit.evaluation.road_images` vs
  Quantus's ``noisy_linear_imputation`` per image and percentage, three channels, no noise.  Smooth
  maps leave large removed blobs, the hard case for an iterative solve; at most
  ``SMOOTH_IMAGES`` images.

The model is torchvision's ResNet-18 with random weights (no download); a peer that is not
installed gives a row that says so.

Run:  python benchmarks/bench_faithfulness.py [--size 224] [--images 100] [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import warnings

import numpy as np
import torch
import torchvision
from _common import Measurement, print_measurements, resolve_device, timed
from torch import nn

from apkit.evaluation.faithfulness import deletion_curve, road, road_images

#: Largest difference of probabilities (or imputed values) accepted between apkit and a peer.
TOLERANCE = 1e-4
PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Images of the smooth-map imputation row (the peer takes about a second per image and percentage).
SMOOTH_IMAGES = 2
SMOOTH_GRID = 7


class Gray(nn.Module):
    """A three-channel classifier fed one-channel images (the channel repeated)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.expand(-1, 3, -1, -1))


def make_case(size: int, images: int, seed: int, device: torch.device):
    """ResNet-18 (random weights), images, continuous maps (no ties) and each image's top-1 class."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None).eval().to(device)
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(images, 3, size, size, generator=gen).to(device)
    maps = torch.rand(images, size, size, generator=gen).to(device)
    with torch.no_grad():
        target = net(inputs).argmax(1)
    return net, inputs, maps, target


def _missing(module: str, package: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{package} is not installed; pip install -e .[bench] (or {package}) to add this row"
    return None


def _quiet(function):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function()


# ------------------------------------------------------------------------------------------- rows


def deletion_row(net, inputs, maps, target, steps, device, repeats) -> Measurement:
    size, count = inputs.shape[-1], inputs.shape[0]
    row = Measurement(name="deletion-quantus", operation=f"deletion curve, {steps} steps, {count} images "
                      f"at {size}x{size}", apkit="apkit.evaluation.deletion_curve, batched",
                      baseline="Quantus PixelFlipping (3 flips per step: one per channel)", device=str(device),
                      repeats=repeats)
    reason = _missing("quantus", "quantus")
    if reason or (size * size) % steps:
        row.skipped, row.check = True, reason or f"steps {steps} must divide {size}x{size} for Quantus"
        return row
    import quantus

    flipping = quantus.PixelFlipping(features_in_step=size * size // steps, perturb_baseline=0.0, normalise=False,
                                     abs=False, disable_warnings=True, display_progressbar=False)
    x, y, a = inputs.cpu().numpy(), target.cpu().numpy(), maps[:, None].cpu().numpy()
    row.apkit_s, row.apkit_peak, ours = timed(lambda: deletion_curve(net, inputs, maps, target, steps=steps),
                                              repeats=repeats, device=device)
    row.baseline_s, row.baseline_peak, theirs = timed(
        lambda: _quiet(lambda: np.array(flipping(model=net, x_batch=x, y_batch=y, a_batch=a, softmax=True,
                                                 device=str(device), batch_size=count))),
        repeats=repeats, device=device)
    error = float(np.abs(theirs[:, 2::3] - ours[:, 1:].cpu().numpy()).max())
    row.equal = error <= TOLERANCE
    row.check = f"curves max difference {error:.1e} (<= {TOLERANCE:g}), every 3rd Quantus point"
    return row


def road_quantus_row(net, inputs, maps, target, percentages, device, repeats) -> Measurement:
    size, count = inputs.shape[-1], inputs.shape[0]
    row = Measurement(name="road-quantus", operation=f"ROAD MoRF, {len(percentages)} percentages, {count} "
                      f"one-channel images at {size}x{size}", apkit="apkit.evaluation.road, batched forward passes",
                      baseline="Quantus ROAD (scipy spsolve per image and percentage)", device=str(device),
                      repeats=repeats)
    reason = _missing("quantus", "quantus")
    if reason:
        row.skipped, row.check = True, reason
        return row
    import quantus

    gray, images = Gray(net).eval(), inputs[:, :1].contiguous()
    with torch.no_grad():
        labels = gray(images).argmax(1)
    whole = [round(100 * p) for p in percentages]
    metric = quantus.ROAD(percentages=whole, noise=0.0, normalise=False, abs=False, disable_warnings=True,
                          display_progressbar=False, return_aggregate=False)
    x, y, a = images.cpu().numpy(), labels.cpu().numpy(), maps[:, None].cpu().numpy()
    row.apkit_s, row.apkit_peak, _ = timed(lambda: road(gray, images, maps, labels, percentages=percentages,
                                                        noise=0.0), repeats=repeats, device=device)
    row.baseline_s, row.baseline_peak, theirs = timed(
        lambda: _quiet(lambda: metric(model=gray, x_batch=x, y_batch=y, a_batch=a, device=str(device),
                                      batch_size=count)), repeats=repeats, device=device)
    with torch.no_grad():
        perturbed = road_images(images, maps, percentages=percentages, noise=0.0).flatten(0, 1)
        kept = (gray(perturbed).argmax(1).reshape(count, -1) == labels[:, None]).double().mean(0).cpu()
    error = float(np.abs(kept.numpy() - np.array([theirs[p] for p in whole])).max())
    row.equal = error <= 1.0 / count + 1e-9  # at most one image's top-1 may flip on a near tie
    row.check = (f"top-1 kept per percentage: max difference {error:.3f} (<= 1/{count} images: a near tie of "
                 "logits may flip under the solvers' rounding)")
    return row


def pgc_road(net, inputs, maps, target, fraction):
    """pytorch-grad-cam's ROAD (MoRF, no noise) removing the same pixels as apkit at ``fraction``."""
    from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric, RemoveMostRelevantFirst
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    pixels = maps[0].numel()
    removed = int(np.floor(round(fraction * pixels, 6)))
    percentile = 100 * (pixels - removed - 0.5) / (pixels - 1)
    metric = PerturbationConfidenceMetric(RemoveMostRelevantFirst(percentile, NoisyLinearImputer(noise=0.0)))
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in target]
    return metric(inputs, maps.cpu().numpy(), targets, net, return_diff=False)


def road_pgc_row(net, inputs, maps, target, percentages, device, repeats) -> Measurement:
    size, count = inputs.shape[-1], inputs.shape[0]
    row = Measurement(name="road-pgc", operation=f"ROAD MoRF, {len(percentages)} percentages, {count} images "
                      f"at {size}x{size}", apkit="apkit.evaluation.road, batched",
                      baseline="pytorch-grad-cam ROAD (scipy spsolve per image and percentage)", device=str(device),
                      repeats=repeats)
    reason = _missing("pytorch_grad_cam", "grad-cam")
    if reason:
        row.skipped, row.check = True, reason
        return row
    row.apkit_s, row.apkit_peak, ours = timed(lambda: road(net, inputs, maps, target, percentages=percentages,
                                                           noise=0.0), repeats=repeats, device=device)
    row.baseline_s, row.baseline_peak, theirs = timed(
        lambda: np.stack([pgc_road(net, inputs, maps, target, p) for p in percentages], axis=1),
        repeats=repeats, device=device)
    error = float(np.abs(ours.cpu().numpy() - theirs).max())
    row.equal = error <= TOLERANCE
    row.check = f"probabilities max difference {error:.1e} (<= {TOLERANCE:g})"
    return row


def smooth_maps(count: int, size: int, seed: int, device: torch.device) -> torch.Tensor:
    """Grad-CAM-like maps: a ``SMOOTH_GRID`` square random grid upsampled bilinearly to ``size``."""
    grid = torch.rand(count, 1, SMOOTH_GRID, SMOOTH_GRID, generator=torch.Generator().manual_seed(seed + 1))
    return nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[:, 0].to(device)


def imputation_smooth_row(inputs, percentages, device, repeats, seed) -> Measurement:
    count, size = min(SMOOTH_IMAGES, inputs.shape[0]), inputs.shape[-1]
    row = Measurement(name="imputation-smooth-quantus", operation=f"ROAD's noisy linear imputation (MoRF, no noise) "
                      f"of {count} images x {len(percentages)} percentages at {size}x{size}, smooth maps",
                      apkit="apkit.evaluation.road_images (sparse LU per mask on the CPU, CG on a GPU)",
                      baseline="Quantus noisy_linear_imputation (scipy spsolve) per image and percentage",
                      device=str(device), repeats=repeats)
    reason = _missing("quantus", "quantus")
    if reason:
        row.skipped, row.check = True, reason
        return row
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    images, maps = inputs[:count], smooth_maps(count, size, seed, device)
    order = np.argsort(-maps.reshape(count, -1).cpu().numpy(), axis=1, kind="stable")
    pixels = size * size
    counts = [int(np.floor(round(p * pixels, 6))) for p in percentages]
    x = images.double().cpu().numpy()

    def theirs():
        return np.stack([np.stack([quantus_imputation(x[i], order[i, :k], noise=0.0) for k in counts])
                         for i in range(count)])

    row.apkit_s, row.apkit_peak, ours = timed(lambda: road_images(images, maps, percentages=percentages, noise=0.0),
                                              repeats=repeats, device=device)
    row.baseline_s, row.baseline_peak, reference = timed(lambda: _quiet(theirs), repeats=repeats, device=device)
    error = float(np.abs(ours.double().cpu().numpy() - reference).max())
    row.equal = error <= TOLERANCE
    row.check = f"imputed images max difference {error:.1e} (<= {TOLERANCE:g})"
    return row


def measure(*, size: int = 224, images: int = 100, steps: int = 16, percentages=PERCENTAGES, threads: int = 2,
            seed: int = 0, device: torch.device | str = "cpu", repeats: int = 1) -> list[Measurement]:
    """Time apkit's deletion, ROAD and imputation against Quantus and pytorch-grad-cam on the same inputs; check values.

    ``steps`` must divide ``size * size`` (Quantus's step size is a whole number of pixels); the
    default 16 does for 224.  ``threads`` sets torch's threads for the run (0 keeps the default).
    """
    device = torch.device(device)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        net, inputs, maps, target = make_case(size, images, seed, device)  # its forward pass is the warm-up
        percentages = tuple(percentages)
        return [deletion_row(net, inputs, maps, target, steps, device, repeats),
                road_quantus_row(net, inputs, maps, target, percentages, device, repeats),
                road_pgc_row(net, inputs, maps, target, percentages, device, repeats),
                imputation_smooth_row(inputs, percentages, device, repeats, seed)]
    finally:
        torch.set_num_threads(previous)


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=16, help="deletion steps; must divide size x size")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0 keeps torch's default)")
    parser.add_argument("--device", default="cpu", help="where apkit runs: cpu, cuda or auto")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each side (the best is reported)")
    args = parser.parse_args(argv)
    rows = measure(size=args.size, images=args.images, steps=args.steps, threads=args.threads,
                   device=resolve_device(args.device), repeats=args.repeats)
    print_measurements(rows)
    if any(row.equal is False for row in rows):
        raise SystemExit("the values differ from a peer's")
    return rows


if __name__ == "__main__":
    main()
