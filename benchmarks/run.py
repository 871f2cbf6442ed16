"""Every benchmark in one run: each apkit operation against its baseline, in one process, as one table.

For each operation the table gives apkit's and the baseline's wall time on the named device, their
ratio, whether both computed the same values, and the peak memory of each side.  The measurements
are those of the ``bench_*.py`` scripts beside this file (which still run on their own):

* ``synthetic``   - rendering of the embedded synthetic dataset (no baseline);
* ``metrics``     - batched ROC-AUC + pointing game vs the paper's scikit-learn loop, Quantus, and
  the bare np.sort of the same pixels (the limit of any exact AUC);
* ``attribution`` - Grad-CAM, Excitation Backprop, LRP and RAP for all (image, class) pairs in one
  call vs one call per pair (Captum's ``LayerGradCam`` for Grad-CAM);
* ``peers``       - the same maps from the libraries a user would otherwise choose: Grad-CAM vs
  Captum and pytorch-grad-cam, LRP vs zennit, Excitation Backprop vs TorchRay (each batched over
  repeated images; a peer that is not installed gives a row that says so);
* ``regularizer`` - a KD training step with the SWA regularizer vs the plain step;
* ``audit``       - the full audit of one student with four methods vs the paper's per-image protocol;
* ``faithfulness`` - deletion and ROAD batched on the device vs Quantus's PixelFlipping and ROAD and
  pytorch-grad-cam's ROAD, which compute image by image (ResNet-18, random weights, 2 threads);
* ``limit``       - each method's time over one forward + backward pass to the input on the same batch
  (torchvision's ResNet-50, MobileNetV2/V3, EfficientNet-B0 and VGG16-BN, random weights, 2 threads), the
  bound no attribution method can beat; printed as a table of its own;
* ``peers-cnn``   - LRP vs zennit (the same rules, zennit's canonizers) on torchvision's ResNet-50 and
  MobileNetV2 at 224x224, one class per image;
* ``randomization`` - the cascading model-parameter randomisation test vs Quantus's MPRT (the top layers of a
  ResNet-18, the same draws on both sides).

The peers table of benchmarks/README.md is ``--only metrics,peers,audit``.

Run:  python benchmarks/run.py [--device auto] [--quick | --smoke] [--only NAME[,NAME]] [--threads N] [--out FILE]

``--quick`` uses small models and inputs (a few minutes on 2 CPU cores); ``--smoke`` the smallest
sizes, which only show that every measurement runs and agrees with its baseline.  ``--device cuda``
runs every row with apkit and the peers on the GPU (scikit-learn, Quantus and np.sort stay on the
CPU).  ``--out FILE`` writes the table as Markdown to FILE and as JSON beside it (FILE with the
suffix ``.json``).  The exit status is 1 when a value check failed or a measurement raised.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import bench_attribution
import bench_audit
import bench_faithfulness
import bench_limit
import bench_metrics
import bench_peers
import bench_randomization
import bench_regularizer_step
import bench_synthetic
import torch
from _common import Measurement, describe_machine, format_bytes, machine_info, resolve_device

from apkit.core.errors import ApkitError
from apkit.core.io import atomic_write_json, atomic_write_text

SUITES: dict[str, Callable[..., list[Measurement]]] = {
    "synthetic": bench_synthetic.measure,
    "metrics": bench_metrics.measure,
    "attribution": bench_attribution.measure,
    "peers": bench_peers.measure,
    "regularizer": bench_regularizer_step.measure,
    "audit": bench_audit.measure,
    "faithfulness": bench_faithfulness.measure,
    "randomization": bench_randomization.measure,
    "limit": bench_limit.measure,
    "peers-cnn": bench_peers.measure_cnns,
}
# Keyword arguments of each suite's measure() per size; "full" is each script's own default.
SIZES: dict[str, dict[str, dict]] = {
    "full": {"synthetic": {}, "metrics": {}, "attribution": {}, "peers": {}, "regularizer": {}, "audit": {},
             "faithfulness": {}, "randomization": {}, "limit": {},
             "peers-cnn": {}},
    "quick": {
        "synthetic": {"images": 500, "repeats": 2},
        "metrics": {"maps": 500, "size": 112, "repeats": 2},
        "attribution": {"model": "vgg_small", "size": 64, "images": 4, "classes": 8, "repeats": 2},
        "peers": {"model": "vgg_small", "size": 64, "images": 4, "classes": 8, "repeats": 2},
        "regularizer": {"teacher": "vgg_small", "width_divisor": 2, "size": 64, "classes": 8, "batch_size": 16,
                        "repeats": 5},
        "audit": {"model": "vgg_small", "width_divisor": 2, "size": 64, "images": 32, "batch_size": 16,
                  "repeats": 2},
        "faithfulness": {"size": 64, "images": 8, "steps": 16},
        "randomization": {"images": 8, "size": 112},
        "limit": {"models": ("resnet18", "mobilenet_v2"), "size": 112, "images": 4, "repeats": 2},
        "peers-cnn": {"models": ("resnet18", "mobilenet_v2"), "size": 112, "images": 4, "repeats": 2},
    },
    "smoke": {
        "synthetic": {"images": 32, "size": 32, "repeats": 1},
        "metrics": {"maps": 32, "size": 32},
        "attribution": {"model": "vgg_small", "size": 32, "images": 1, "classes": 4, "repeats": 1},
        "peers": {"model": "vgg_small", "size": 32, "images": 1, "classes": 4, "repeats": 1},
        "regularizer": {"teacher": "vgg_small", "width_divisor": 2, "size": 32, "classes": 4, "batch_size": 4,
                        "repeats": 1},
        "audit": {"model": "vgg_small", "width_divisor": 2, "size": 32, "images": 4, "batch_size": 4},
        "faithfulness": {"size": 32, "images": 2, "steps": 4, "percentages": (0.2, 0.6), "threads": 0},
        "randomization": {"images": 2, "size": 64, "layers": 2, "threads": 0},
        "limit": {"models": ("resnet18",), "size": 64, "images": 2, "repeats": 1, "threads": 0},
        "peers-cnn": {"models": ("resnet18",), "size": 64, "images": 2, "repeats": 1},
    },
}
# Suites whose measure() takes no device: they run on the CPU.
CPU_ONLY = {"synthetic"}

NOTES = (
    "Times are wall-clock seconds on the named device, after a warm-up: the best of 'runs' runs (the "
    "regularizer rows: the median of 'runs' alternating steps); apkit and its baseline run in the same "
    "process on the same inputs.",
    "Ratio = baseline time / apkit time: above 1, apkit is faster.  For the regularizer rows apkit is the "
    "regularized step and the baseline the plain one, so the ratio below 1 is the regularizer's cost "
    "(0.95: the regularized step takes 1.05x as long).  The metrics-npsort row's baseline is a bound, the "
    "bare np.sort of the pixels apkit scores: its ratio below 1 says how close apkit comes to only sorting "
    "(0.5: apkit takes twice as long as the sort alone).  The limit rows' baseline is a bound too, one forward "
    "and one backward pass to the input on the same batch; their table gives the inverse, each method's time "
    "over the bound (1.5x: half as long again as the bound).",
    "Skipped: a peer library that is not installed here (pip install -e .[bench] installs them all).",
    "Peak memory is what one run adds to the memory in use when it starts.  CUDA: "
    "torch.cuda.max_memory_allocated minus the allocated memory at the start.  CPU (Linux): the kernel's "
    "peak resident set size (VmHWM), reset at the start through /proc/self/clear_refs, minus the resident "
    "size then, after freed heap memory is handed back; exact, not sampled, but it counts everything the "
    "process touches meanwhile, caches and allocator slack included.  '–': not measurable here.",
    "Same values: whether apkit and its baseline computed the same results; the checks list what was compared.",
)


def parse_only(values: list[str] | None, parser: argparse.ArgumentParser) -> list[str]:
    """The suites named by ``--only`` (each value may be comma-separated), in the runner's order."""
    if not values:
        return list(SUITES)
    names = {n.strip() for value in values for n in value.split(",") if n.strip()}
    unknown = sorted(names - set(SUITES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(SUITES)}")
    return [name for name in SUITES if name in names]


def run_suites(names: list[str], size: str, device: torch.device) -> list[Measurement]:
    """Run the named suites at ``size``; a suite that raises gives a failed row instead of stopping the run."""
    rows: list[Measurement] = []
    for name in names:
        options = dict(SIZES[size][name])
        if name not in CPU_ONLY:
            options["device"] = device
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        try:
            rows += SUITES[name](**options)
        except Exception as exc:  # noqa: BLE001 - reported in the table and the exit status
            traceback.print_exc()
            rows.append(Measurement(name=name, operation=name, apkit="", baseline="", equal=False,
                                    check=f"raised {type(exc).__name__}: {exc}", device=str(device)))
    return rows


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _same(row: Measurement) -> str:
    if row.skipped:
        return "not installed" if "not installed" in row.check else "skipped"
    return {True: "yes", False: "**NO**", None: "–"}[row.equal]


def to_markdown(rows: list[Measurement], info: dict, size: str, command: str) -> str:
    """The table, its value checks and its notes as Markdown."""
    lines = [
        "# apkit benchmarks", "",
        f"Machine: {describe_machine(info)}.  ",
        f"Sizes: {size} (`{command}`), {time.strftime('%Y-%m-%d %H:%M %Z')}.", "",
        "| id | operation | apkit | baseline | apkit time | baseline time | ratio | same values | apkit peak "
        "| baseline peak | runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "–" if row.ratio is None else f"{row.ratio:.2f}×"
        lines.append(
            f"| {row.name} | {row.operation} [{row.device}] | {row.apkit or '–'} | {row.baseline or '–'} "
            f"| {_seconds(row.apkit_s)} | {_seconds(row.baseline_s)} | {ratio} | {_same(row)} "
            f"| {format_bytes(row.apkit_peak)} | {format_bytes(row.baseline_peak)} | {row.repeats} |"
        )
    limit_rows = [row for row in rows if "over_limit" in row.extra]
    if limit_rows:
        lines += ["", "Each method's time over one forward + backward pass to the input (the limit rows):", "",
                  bench_limit.limit_table(limit_rows)]
    lines += ["", "Value checks:", ""]
    lines += [f"- `{row.name}`: {row.check or '–'}" for row in rows]
    lines += ["", "Notes:", ""]
    lines += [f"{i}. {note}" for i, note in enumerate(NOTES, 1)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="small sizes: about a minute on 2 CPU cores")
    sizes.add_argument("--smoke", action="store_true",
                       help="the smallest sizes: shows that every measurement runs (times mean little)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only these benchmarks (comma-separated or repeated): {', '.join(SUITES)}")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch CPU threads (default 0: torch's default; the metrics and synthetic "
                             "benchmarks use 1, like the single-core loops they are compared with)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="write the table as Markdown to FILE and as JSON to FILE with the suffix .json")
    args = parser.parse_args(argv)
    names = parse_only(args.only, parser)
    if args.out is not None and args.out.with_suffix(".json") == args.out:
        parser.error("--out names the Markdown file; the JSON goes beside it with the suffix .json")
    try:
        device = resolve_device(args.device)
    except ApkitError as exc:
        parser.error(str(exc))
    if args.threads < 0:
        parser.error(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    size = "quick" if args.quick else "smoke" if args.smoke else "full"
    command = " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])

    info = machine_info(device)
    print(f"Machine: {describe_machine(info)}", flush=True)
    began = time.perf_counter()
    rows = run_suites(names, size, device)
    markdown = to_markdown(rows, info, size, command)
    print()
    print(markdown)
    print(f"({time.perf_counter() - began:.0f} s)")
    if args.out is not None:
        atomic_write_text(args.out, markdown)
        atomic_write_json(args.out.with_suffix(".json"), {
            "machine": info, "size": size, "command": command, "suites": names, "notes": list(NOTES),
            "results": [row.to_dict() for row in rows],
        })
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    failed = [row.name for row in rows if row.equal is False]
    if failed:
        print(f"value checks failed or measurements raised: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
