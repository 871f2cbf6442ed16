"""Generation speed of the embedded synthetic-shapes dataset on one CPU core.

Usage: ``python benchmarks/bench_synthetic.py [--images 1000] [--size 64] [--repeats 3]``.
Prints images per second and the time for the requested number of images (best of the repeats).
"""

from __future__ import annotations

import argparse
import time

import torch

from apkit.data import generate_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images per timed run")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best one is reported")
    args = parser.parse_args()

    torch.set_num_threads(1)
    generate_shapes(range(64), image_size=args.size)  # warm-up: imports, allocator, kernels
    times = []
    for r in range(args.repeats):
        start = time.perf_counter()
        generate_shapes(range(r * args.images, (r + 1) * args.images), split="train", image_size=args.size)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(f"synthetic shapes {args.size}x{args.size}, 1 thread: {args.images / best:.0f} images/s; "
          f"{args.images} images in {best:.3f} s (best of {args.repeats}; all: "
          f"{', '.join(f'{t:.3f}' for t in times)} s)")


if __name__ == "__main__":
    main()
