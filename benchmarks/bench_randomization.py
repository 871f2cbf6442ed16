"""The cascading randomisation test (Adebayo et al., 2018): apkit against Quantus's MPRT on the same inputs.

Both sides randomise the same top layers of the same model with the same draws (apkit's ``seed`` is
Quantus's ``seed + 1``, see :mod:`apkit.evaluation.randomization`) and explain with the very same
function, ``apkit.explain`` (Grad-CAM by default), so the row times what each adds around the
attributions -- Quantus: a batch loop through NumPy on the CPU, a rescaling, SciPy's Spearman over the
full cross-correlation matrix of every batch; apkit: one call per layer and the rank correlation on
the device.  Both explain the same layer (for Grad-CAM, chosen once).  The value check compares the
per-image Spearman correlations of every layer (to 1e-4: Quantus rescales the maps in float32 first,
which can turn near-equal values into ties).

Quantus has no option to randomise only some layers: the script stops its layer generator after the
top ``layers`` layers (the order and the draws are Quantus's own).  The model is a torchvision ResNet-18
with random weights (no download).

Run:  python benchmarks/bench_randomization.py [--quick | --smoke] [--images 16] [--size 224] [--layers 3]
      [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import itertools
import warnings
from collections.abc import Iterator
from unittest import mock

import numpy as np
import torch
from _common import Measurement, print_measurements, resolve_device, timed
from torchvision.models import resnet18

import apkit
from apkit.evaluation.randomization import randomizable_layers, randomization_test
from apkit.models import default_layer

TOLERANCE = 1e-4
SEED = 0
LAYER_METHODS = ("gradcam", "excitation")
# Keyword arguments of measure() for the script's smaller sizes (the defaults are the full size).
SIZES = {
    "quick": {"images": 8, "size": 112, "layers": 3},
    "smoke": {"images": 2, "size": 64, "layers": 2},
}


def make_case(images: int, size: int, classes: int, device: torch.device):
    """A ResNet-18 with random weights (seeded), images and one target class per image."""
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    net = resnet18(weights=None, num_classes=classes).eval().to(device)
    inputs = torch.randn(images, 3, size, size, generator=gen).to(device)
    target = torch.randint(0, classes, (images,), generator=gen).to(device)
    return net, inputs, target


@contextlib.contextmanager
def _quantus_top_layers(count: int) -> Iterator[None]:
    """Let Quantus's MPRT randomise only the first ``count`` layers of its own (top-down) order."""
    from quantus.helpers.model.pytorch_model import PyTorchModel

    generator = PyTorchModel.get_random_layer_generator

    def first_layers(self, order="top_down", seed=42):
        return itertools.islice(generator(self, order=order, seed=seed), count)

    with mock.patch.object(PyTorchModel, "get_random_layer_generator", first_layers), \
            mock.patch.object(PyTorchModel, "random_layer_generator_length", property(lambda self: count)):
        yield


def quantus_mprt(net, inputs, target, *, method: str, options: dict, layers: int,
                 device: torch.device) -> dict[str, list[float]]:
    """Quantus's MPRT over the top ``layers`` layers, explaining with ``apkit.explain(..., **options)``."""
    import quantus

    def explain_func(model, inputs, targets, **_):
        maps = apkit.explain(model, torch.as_tensor(inputs, device=device), torch.as_tensor(targets, device=device),
                             method=method, batch_size=len(inputs), **options)
        return maps.detach().cpu().numpy()[:, None]

    metric = quantus.MPRT(layer_order="top_down", seed=SEED - 1, abs=True, normalise=True, disable_warnings=True)
    with warnings.catch_warnings(), _quantus_top_layers(layers):
        warnings.simplefilter("ignore")
        scores = metric(model=net, x_batch=inputs.cpu().numpy(), y_batch=target.cpu().numpy(), a_batch=None,
                        explain_func=explain_func, device=str(device), batch_size=len(inputs), channel_first=True)
    scores.pop("original")
    return scores


def measure(*, images: int = 16, size: int = 224, layers: int = 3, method: str = "gradcam", classes: int = 1000,
            threads: int = 2, repeats: int = 1, device: torch.device | str = "cpu") -> list[Measurement]:
    """apkit's ``randomization_test`` against Quantus's ``MPRT`` on the top ``layers`` layers of a ResNet-18.

    ``threads`` torch threads are used on the CPU (0: torch's default) and restored afterwards.  A
    missing Quantus gives a skipped row.
    """
    device = torch.device(device)
    row = Measurement(
        name="randomization-quantus",
        operation=f"cascading randomisation test ({method}) of ResNet-18 at {size}x{size}, {images} images, "
                  f"top {layers} layers",
        apkit="apkit randomization_test: one explain call per layer, Spearman on the device",
        baseline="Quantus MPRT (same explain function, same draws), batch of all images",
        device=str(device), repeats=repeats,
    )
    if importlib.util.find_spec("quantus") is None:
        row.skipped, row.check = True, "quantus is not installed; pip install quantus to add this row"
        return [row]
    previous = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        net, inputs, target = make_case(images, size, classes, device)
        names = randomizable_layers(net)[:layers]
        # Both sides explain the same layer, chosen once (apkit's default for a layer method).
        options = {"layer": default_layer(net, "attribution", inputs[:1])} if method in LAYER_METHODS else {}

        def ours():
            return randomization_test(net, inputs, target, method=method, layers=names, seed=SEED,
                                      batch_size=images, explain_options=options)

        def theirs():
            return quantus_mprt(copy.deepcopy(net), inputs, target, method=method, options=options, layers=layers,
                                device=device)

        ours(), theirs()  # warm-up at the timed shapes
        row.apkit_s, row.apkit_peak, mine = timed(ours, repeats=repeats, device=device)
        row.baseline_s, row.baseline_peak, reference = timed(theirs, repeats=repeats, device=device)
        expected = np.array([reference[name] for name in mine.layers])
        error = float(np.nanmax(np.abs(mine.spearman_per_image.cpu().numpy() - expected)))
        same_nan = bool(np.array_equal(np.isnan(expected), mine.spearman_per_image.isnan().cpu().numpy()))
        row.equal = list(reference) == list(mine.layers) and same_nan and error <= TOLERANCE
        row.check = (f"layers {', '.join(mine.layers)} in the same order; per-image Spearman max difference "
                     f"{error:.1e} (<= {TOLERANCE:g})")
        row.extra = {"layers": list(mine.layers), "mean_spearman": mine.spearman.tolist(),
                     "threads": torch.get_num_threads() if device.type == "cpu" else None}
    finally:
        torch.set_num_threads(previous)
    return [row]


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help=f"small sizes: {SIZES['quick']}")
    sizes.add_argument("--smoke", action="store_true", help=f"the smallest sizes: {SIZES['smoke']}")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="input side")
    parser.add_argument("--layers", type=int, default=None, help="how many top layers to randomise")
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    settings = dict(SIZES["quick"] if args.quick else SIZES["smoke"] if args.smoke else {})
    settings.update({k: v for k, v in (("images", args.images), ("size", args.size), ("layers", args.layers))
                     if v is not None})
    rows = measure(**settings, method=args.method, threads=args.threads, repeats=args.repeats,
                   device=resolve_device(args.device))
    print_measurements(rows)
    if any(row.equal is False for row in rows):
        raise SystemExit("apkit's randomisation test differs from Quantus's MPRT")
    return rows


if __name__ == "__main__":
    main()
