"""How close each attribution method comes to its physical limit: one forward plus one backward pass.

A map of any of apkit's methods needs at least one forward pass over the images and one backward
pass of something the size of the activations.  This script times ``apkit.explain`` for a batch of
images with one class each, and, on the same batch and in the same process, one forward pass plus
one backward pass of the target logits to the input (``torch.autograd.grad``).  The two are timed
alternately (interleaved repeats, the best of each kept), so a shared machine slows both alike.
The figure of a row is the method's time over the limit's: 1.0 means the method costs exactly one
forward and backward pass.

Models: torchvision's ResNet-50, MobileNetV2, MobileNetV3-large and EfficientNet-B0 at 224x224 and
VGG16-BN at 227x227, random weights (seed 0), eval mode.  The layer of the layer methods (Grad-CAM,
Excitation Backprop) is chosen once per model with :func:`apkit.models.default_layer` and passed to
every call, so that the timed calls do not repeat the layer probe.

On a shared machine wall-clock times move by several times between runs: each operator that runs on
two threads waits for the second one to be scheduled (measured at 7 ms per call under a load of 3 on 2
cores, whatever its size).  ``--clock cpu`` times the CPU seconds of the process instead, the work
done; run it as ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_limit.py --clock cpu`` so that a
waiting thread sleeps instead of spinning (spinning would count as work).

Run: ``python benchmarks/bench_limit.py`` (about 5 minutes on 2 CPU cores); ``--help`` for options.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torchvision
from _common import Measurement, PeakMemory, resolve_device, synchronize

import apkit
from apkit.models import default_layer

MODELS = ("resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "vgg16_bn")
METHODS = ("gradcam", "lrp", "excitation", "rap")
# The paper's VGG16-BN input; every other model at ImageNet's 224.
SIZES = {"vgg16_bn": 227}


def make_model(name: str, device: torch.device) -> torch.nn.Module:
    """A torchvision classifier with random weights (seed 0), in eval mode, on ``device``."""
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).to(device).eval()


def forward_backward(model: torch.nn.Module, inputs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The limit: one forward pass and one backward pass of each image's target logit to the input."""
    x = inputs.detach().requires_grad_()
    logits = model(x)
    (gradient,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), x)
    return gradient


def _warm(model, inputs, classes, method: str, layer: str):
    if method == "limit":
        return forward_backward(model, inputs, classes)
    options = {"layer": layer} if method in ("gradcam", "excitation") else {}
    return apkit.explain(model, inputs, classes, method=method, **options)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed_once(function, device: torch.device, clock=time.perf_counter) -> tuple[float, int | None, object]:
    with PeakMemory(device) as memory:
        synchronize(device)
        began = clock()
        result = function()
        synchronize(device)
        seconds = clock() - began
    return seconds, memory.peak, result


def _interleaved(functions: dict[str, object], *, repeats: int, device: torch.device,
                 clock=time.perf_counter) -> dict[str, tuple]:
    """``name -> (best time, largest peak, last result)``, the functions run in turn ``repeats`` times."""
    best: dict[str, tuple] = {}
    for _ in range(max(1, repeats)):
        for name, function in functions.items():
            seconds, peak, result = _timed_once(function, device, clock)
            previous = best.get(name, (float("inf"), None, None))
            peaks = [p for p in (peak, previous[1]) if p is not None]
            best[name] = (min(seconds, previous[0]), max(peaks) if peaks else None, result)
    return best


def _check(maps: torch.Tensor, images: int, size: int) -> tuple[bool, str]:
    # A random network may leave a map all zero (EB's positive part), so only shape and finiteness are checked.
    finite = bool(torch.isfinite(maps).all())
    shaped = tuple(maps.shape) == (images, size, size)
    return finite and shaped, f"a bound, not a reference: maps {tuple(maps.shape)}, finite: {finite}"


def measure_model(model_name: str, *, size: int, images: int, repeats: int, methods: tuple[str, ...],
                  device: torch.device, clock: str = "wall") -> list[Measurement]:
    """The rows of one model: each method's time against one forward + backward pass on the same batch."""
    model = make_model(model_name, device)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(images, 3, size, size, generator=generator).to(device)
    classes = torch.randint(0, 1000, (images,), generator=generator).to(device)
    layer = default_layer(model, example_inputs=inputs[:1])
    functions = {"limit": lambda: forward_backward(model, inputs, classes)}
    for method in methods:
        options = {"layer": layer} if method in ("gradcam", "excitation") else {}
        functions[method] = lambda m=method, o=options: apkit.explain(model, inputs, classes, method=m, **o)
    # Warm-up on two of the images: kernels, the allocator, the layer probe's modules.
    _interleaved({name: lambda m=method: _warm(model, inputs[:2], classes[:2], m, layer) for name, method
                  in zip(functions, ["limit", *methods])}, repeats=1, device=device)
    results = _interleaved(functions, repeats=repeats, device=device, clock=CLOCKS[clock])
    limit_s, limit_peak, _ = results["limit"]
    figures = "  ".join(f"{method} {results[method][0] / limit_s:.2f}x" for method in methods)
    print(f"{model_name}: forward + backward {limit_s:.3f} s; {figures}", file=sys.stderr, flush=True)
    rows = []
    for method in methods:
        seconds, peak, maps = results[method]
        equal, check = _check(maps, images, size)
        rows.append(Measurement(
            name=f"limit-{model_name}-{method}",
            operation=f"{method} maps of {model_name} at {size}x{size}, {images} images x 1 class",
            apkit="apkit.explain", baseline="the limit: one forward + one backward pass to the input",
            apkit_s=seconds, baseline_s=limit_s, equal=equal, check=check, apkit_peak=peak,
            baseline_peak=limit_peak, device=str(device), repeats=repeats,
            extra={"model": model_name, "method": method, "over_limit": seconds / limit_s, "layer": layer,
                   "clock": clock},
        ))
    return rows


def measure(*, models: tuple[str, ...] = MODELS, methods: tuple[str, ...] = METHODS, size: int = 224,
            images: int = 8, repeats: int = 3, threads: int = 2,
            device: torch.device | str = "cpu", clock: str = "wall") -> list[Measurement]:
    """Each method's time over one forward + backward pass, per model (VGG16-BN at ``size + 3``).

    ``threads`` sets torch's CPU threads for the run (0 keeps the current setting).  A row's ratio
    (limit / apkit) below 1 says how far the method is from the limit; ``extra["over_limit"]`` is
    its inverse, the figure of the limit table.  ``clock``: ``"wall"`` (elapsed time) or ``"cpu"``
    (CPU seconds of the process, on the CPU only; see the module's notes).
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    device = torch.device(device)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        rows = []
        for name in models:
            side = size + SIZES.get(name, 224) - 224
            rows += measure_model(name, size=side, images=images, repeats=repeats, methods=methods, device=device,
                                  clock=clock)
        return rows
    finally:
        torch.set_num_threads(previous)


def limit_table(rows: list[Measurement]) -> str:
    """The rows as a Markdown table: one line per model, each method's time over the limit's."""
    figures = {(r.extra["model"], r.extra["method"]): r for r in rows if "over_limit" in r.extra}
    models = list(dict.fromkeys(model for model, _ in figures))
    methods = list(dict.fromkeys(method for _, method in figures))
    lines = ["| model | forward + backward | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for model in models:
        first = next(r for (m, _), r in figures.items() if m == model)
        cells = [f"{figures[model, method].extra['over_limit']:.2f}×" if (model, method) in figures else "–"
                 for method in methods]
        lines.append(f"| {model} | {first.baseline_s:.3f} s | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--size", type=int, default=224, help="input side (VGG16-BN: 3 more)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0 keeps torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                        help="wall: elapsed time; cpu: CPU seconds of the process (with OMP_WAIT_POLICY=PASSIVE)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.clock == "cpu" and (device.type != "cpu" or os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"):
        parser.error("--clock cpu needs --device cpu and OMP_WAIT_POLICY=PASSIVE in the environment (a spinning "
                     "thread's wait would count as work)")
    rows = measure(models=tuple(m for m in args.models.split(",") if m), size=args.size, images=args.images,
                   methods=tuple(m for m in args.methods.split(",") if m), repeats=args.repeats,
                   threads=args.threads, device=device, clock=args.clock)
    print(f"time over one forward + backward pass ({args.clock} clock), {args.images} images x 1 class, "
          f"{args.threads} threads, device {device}, best of {args.repeats} interleaved runs")
    print(limit_table(rows))
    if any(row.equal is False for row in rows):
        raise SystemExit("a method gave non-finite maps or maps of the wrong shape")
    return rows


if __name__ == "__main__":
    main()
