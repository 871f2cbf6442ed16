"""Generation speed of the embedded synthetic-shapes dataset on one CPU core.

Usage: ``python benchmarks/bench_synthetic.py [--images 1000] [--size 64] [--repeats 3]``.
Prints images per second and the time for the requested number of images (best of the repeats).
"""

from __future__ import annotations

import argparse

import torch
from _common import Measurement, format_bytes, timed

from apkit.data import generate_shapes


def measure(*, images: int = 1000, size: int = 64, repeats: int = 3, threads: int = 1) -> list[Measurement]:
    """Render ``images`` images (best of ``repeats``); check that rendering is deterministic.

    There is no baseline: the row reports apkit's time alone.  ``threads`` torch threads are used
    (restored afterwards; 0 keeps torch's default).
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        generate_shapes(range(64), image_size=size)  # warm-up: imports, allocator, kernels
        times, peak = [], None
        for r in range(repeats):
            seconds, memory, _ = timed(
                lambda r=r: generate_shapes(range(r * images, (r + 1) * images), split="train", image_size=size),
                repeats=1, device=torch.device("cpu"))
            times.append(seconds)
            peak = memory if peak is None or (memory is not None and memory > peak) else peak
        first, again = generate_shapes(range(8), image_size=size), generate_shapes(range(8), image_size=size)
        equal = all(torch.equal(a, b) for a, b in zip(first, again))
        best = min(times)
        return [Measurement(
            name="synthetic", operation=f"render {images} synthetic {size}x{size} images (images, labels, masks)",
            apkit=f"apkit.data.generate_shapes, vectorised ({torch.get_num_threads()} thread(s))", baseline="",
            apkit_s=best, equal=equal, check="a second rendering of the same indices is identical",
            apkit_peak=peak, device="cpu", repeats=repeats,
            extra={"images_per_s": images / best, "times": times},
        )]
    finally:
        torch.set_num_threads(previous)


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images per timed run")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best one is reported")
    args = parser.parse_args(argv)
    rows = measure(images=args.images, size=args.size, repeats=args.repeats)
    row = rows[0]
    print(f"synthetic shapes {args.size}x{args.size}, 1 thread: {row.extra['images_per_s']:.0f} images/s; "
          f"{args.images} images in {row.apkit_s:.3f} s (best of {args.repeats}; all: "
          f"{', '.join(f'{t:.3f}' for t in row.extra['times'])} s); peak memory {format_bytes(row.apkit_peak)}")
    return rows


if __name__ == "__main__":
    main()
