"""ROC-AUC and pointing game: apkit's batched metrics against the paper's per-map scikit-learn loop.

The paper's evaluation script (METHOD §4.2) scores one map at a time: min-max normalise the map,
``sklearn.metrics.roc_curve`` + ``auc`` against the class mask, and the first ``np.where`` arg-max
for the pointing game.  This script times that loop and ``apkit.metrics`` on the same maps in one
process, checks that the values are the same, and also times Quantus's ``AUC`` and
``PointingGame`` when Quantus is installed (``pip install -e .[bench]``; it is not a dependency
of apkit), and the bare ``np.sort`` of the same pixels: no exact AUC can do less than sort them.

The maps imitate Grad-CAM at VGG16's conv5_3: a ReLU'd 14x14 map upsampled bilinearly to the
input size; the masks are random blobs.

Run:  python benchmarks/bench_metrics.py [--maps 2000] [--size 227] [--threads N] [--no-quantus] [--device cpu]

By default torch runs on one thread, as the scikit-learn loop does, so the ratio compares one core
with one core.  (On a machine busy with other work, torch's multi-threaded kernels can be much
slower than single-threaded ones: each parallel region waits for a descheduled thread.)
"""

from __future__ import annotations

import argparse
import importlib

import numpy as np
import torch
import torch.nn.functional as F
from _common import Measurement, print_measurements, resolve_device, timed
from sklearn.metrics import auc, roc_curve

from apkit.metrics import normalize_maps, pointing_game, roc_auc


def make_data(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 1, 14, 14, generator=gen).clamp_(min=0)
    coarse[:, :, 0, 0] += 1e-3  # no map is all zero
    maps = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0].contiguous()
    blobs = F.interpolate(torch.rand(count, 1, 6, 6, generator=gen), size=(size, size), mode="bilinear",
                          align_corners=False)[:, 0]
    masks = blobs > 0.6
    masks[:, 0, 0] = True  # at least one positive ...
    masks[:, -1, -1] = False  # ... and one negative pixel per mask
    return maps, masks


def paper_loop(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference script's per-map evaluation (METHOD §4.2)."""
    aucs, hits = np.empty(len(maps)), np.empty(len(maps))
    for i, (heat, mask) in enumerate(zip(maps, masks)):
        where = np.where(heat == heat.max())
        hits[i] = mask[where[0][0], where[1][0]]
        heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-5)
        fpr, tpr, _ = roc_curve(mask.flatten(), heat.flatten())
        aucs[i] = auc(fpr, tpr)
    return aucs, hits


def _tied_maxima(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which maps have several maxima, and whether any maximum of each map is on its mask."""
    peaks = maps == maps.max(axis=(1, 2), keepdims=True)
    return peaks.sum(axis=(1, 2)) > 1, (peaks & masks).any(axis=(1, 2)).astype(np.float64)


def apkit_metrics(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return roc_auc(normalize_maps(maps), masks), pointing_game(maps, masks)


def quantus_metrics(maps: np.ndarray, masks: np.ndarray):
    import warnings

    import quantus

    x = np.zeros((len(maps), 1, 1, 1), dtype=np.float32)  # only the shapes of x are used
    y = np.zeros(len(maps), dtype=np.int64)
    a = ((maps - maps.min(axis=(1, 2), keepdims=True))
         / (maps.max(axis=(1, 2), keepdims=True) - maps.min(axis=(1, 2), keepdims=True) + 1e-5))[:, None]
    s = masks[:, None].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auc_metric = quantus.AUC(normalise=False, abs=False, disable_warnings=True)
        point_metric = quantus.PointingGame(normalise=False, abs=False, disable_warnings=True)
        x = np.broadcast_to(x, (len(maps), 1, *maps.shape[1:]))
        aucs = auc_metric(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True)
        hits = point_metric(model=None, x_batch=x, y_batch=y, a_batch=maps[:, None], s_batch=s, channel_first=True)
    return np.asarray(aucs, dtype=np.float64), np.asarray(hits, dtype=np.float64)


def sort_limit_row(on_device: tuple[torch.Tensor, torch.Tensor], metrics_row: Measurement, device: torch.device,
                   repeats: int) -> Measurement:
    """apkit's AUC + pointing against the bare np.sort of the same pixels: the physical limit on one core.

    The ratio (sort time / apkit time) is below 1: how close apkit comes to only sorting.  There is
    nothing to compare but the pixels themselves: the check is that np.sort kept every pixel in order.
    """
    maps, masks = on_device
    # The pixels apkit's AUC scores: each map normalised (outside the timing), one row per map.
    pixels = normalize_maps(maps).cpu().numpy().reshape(len(maps), -1)
    t_apkit, peak_apkit, _ = timed(lambda: apkit_metrics(maps, masks), repeats=repeats, device=device)
    t_sort, peak_sort, ordered = timed(lambda: np.sort(pixels, axis=1), repeats=repeats, device=torch.device("cpu"))
    in_order = bool((ordered[:, 1:] >= ordered[:, :-1]).all()) and ordered.shape == (len(maps), maps[0].numel())
    return Measurement(
        name="metrics-npsort", operation=metrics_row.operation, apkit=metrics_row.apkit,
        baseline="the bare np.sort of the same normalised pixels, per map (1 core): the limit",
        apkit_s=t_apkit, baseline_s=t_sort, equal=in_order,
        check=f"a bound, not a metric: np.sort ordered all {ordered.size:,} pixels"
              f"{'' if in_order else ' WRONGLY'}; ratio = sort time / apkit time (1 would be only sorting)",
        apkit_peak=peak_apkit, baseline_peak=peak_sort, device=str(device), repeats=repeats,
    )


def measure(*, maps: int = 2000, size: int = 227, threads: int = 1, seed: int = 0, quantus: bool = True,
            quantus_maps: int = 200, device: torch.device | str = "cpu", repeats: int = 2) -> list[Measurement]:
    """Time apkit's metrics against the paper loop (and Quantus) on the same maps; check the values.

    Returns one :class:`Measurement` for the scikit-learn loop, one for Quantus (skipped when
    Quantus is not installed or ``quantus=False``), timed against apkit on the first
    ``quantus_maps`` maps (Quantus takes minutes for thousands of maps), and one for the bare
    ``np.sort`` of the same pixels (the limit).  ``threads`` torch threads
    are used on the CPU (0: torch's default) and restored afterwards.
    """
    device = torch.device(device)
    previous = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        cpu_maps, cpu_masks = make_data(maps, size, seed)
        maps_np, masks_np = cpu_maps.numpy(), cpu_masks.numpy()
        on_device = cpu_maps.to(device), cpu_masks.to(device)
        apkit_metrics(on_device[0][:4], on_device[1][:4])  # warm-up
        t_apkit, peak_apkit, (ours_auc, ours_hit) = timed(lambda: apkit_metrics(*on_device), repeats=repeats,
                                                          device=device)
        t_paper, peak_paper, (paper_auc, paper_hit) = timed(lambda: paper_loop(maps_np, masks_np), repeats=repeats,
                                                            device=torch.device("cpu"))
        ours_auc, ours_hit = ours_auc.cpu().numpy(), ours_hit.cpu().numpy()
        auc_error = float(np.abs(ours_auc - paper_auc).max())
        equal = auc_error <= 1e-9 and bool(np.array_equal(ours_hit, paper_hit))
        where = f"{torch.get_num_threads()} torch thread(s)" if device.type == "cpu" else "on the GPU"
        operation = f"ROC-AUC + pointing game of {maps} maps at {size}x{size}"
        rows = [Measurement(
            name="metrics", operation=operation, apkit=f"apkit.metrics, batched ({where})",
            baseline="paper loop: sklearn roc_curve + auc, np.where, per map (1 core)",
            apkit_s=t_apkit, baseline_s=t_paper, equal=equal,
            check=f"AUC max difference {auc_error:.1e} (<= 1e-9), pointing hits "
                  f"{'identical' if np.array_equal(ours_hit, paper_hit) else 'DIFFER'}",
            apkit_peak=peak_apkit, baseline_peak=peak_paper, device=str(device), repeats=repeats,
            extra={"mean_auc": float(paper_auc.mean()), "pointing": float(paper_hit.mean()),
                   "apkit_ms_per_map": 1000 * t_apkit / maps, "baseline_ms_per_map": 1000 * t_paper / maps},
        )]
        count = min(quantus_maps, maps)
        quantus_row = Measurement(name="metrics-quantus",
                                  operation=f"ROC-AUC + pointing game of {count} maps at {size}x{size}",
                                  apkit=rows[0].apkit, baseline="Quantus AUC + PointingGame",
                                  device=str(device), repeats=repeats)
        reason = None if quantus else "Quantus left out (quantus=False)"
        if quantus:
            try:
                importlib.import_module("quantus")
            except ImportError as exc:
                reason = f"Quantus is not installed ({exc}); pip install -e .[bench] (or quantus) to add it"
        if reason is None:
            subset = on_device[0][:count], on_device[1][:count]
            t_q, peak_q, (q_auc, q_hit) = timed(lambda: quantus_metrics(maps_np[:count], masks_np[:count]),
                                                repeats=repeats, device=torch.device("cpu"))
            t_sub, peak_sub, _ = timed(lambda: apkit_metrics(*subset), repeats=repeats, device=device)
            q_error = float(np.abs(q_auc - paper_auc[:count]).max())
            # Quantus counts a hit when any tied maximum is on the mask, the paper when the first one
            # (row-major) is: the two agree on the maps with one maximum.
            tied, any_hit = _tied_maxima(maps_np[:count], masks_np[:count])
            same_hits = bool(np.array_equal(q_hit, any_hit) and np.array_equal(q_hit[~tied], paper_hit[:count][~tied]))
            quantus_row.baseline_s, quantus_row.baseline_peak = t_q, peak_q
            quantus_row.apkit_s, quantus_row.apkit_peak = t_sub, peak_sub
            quantus_row.equal = q_error <= 1e-9 and same_hits
            quantus_row.check = (f"Quantus vs the paper loop (which apkit matches): AUC max difference "
                                 f"{q_error:.1e}, pointing hits {'identical' if same_hits else 'DIFFER'} "
                                 f"({int(tied.sum())} maps with tied maxima scored by Quantus's any-maximum rule)")
        else:
            quantus_row.skipped, quantus_row.check = True, reason
        rows.append(quantus_row)
        rows.append(sort_limit_row(on_device, rows[0], device, repeats))
        return rows
    finally:
        torch.set_num_threads(previous)


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=2000)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the paper loop uses one core; 0 keeps torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-quantus", action="store_true")
    parser.add_argument("--quantus-maps", type=int, default=200, help="maps Quantus is timed on (it is slow)")
    parser.add_argument("--device", default="cpu", help="where apkit's metrics run: cpu, cuda or auto")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each side (the best is reported)")
    args = parser.parse_args(argv)
    rows = measure(maps=args.maps, size=args.size, threads=args.threads, seed=args.seed,
                   quantus=not args.no_quantus, quantus_maps=args.quantus_maps, device=resolve_device(args.device),
                   repeats=args.repeats)
    print_measurements(rows)
    extra = rows[0].extra
    print(f"\n{extra['apkit_ms_per_map']:.3f} ms / map (apkit), {extra['baseline_ms_per_map']:.3f} ms / map "
          f"(paper loop); mean AUC {extra['mean_auc']:.4f}, pointing accuracy {extra['pointing']:.4f}")
    if any(row.equal is False for row in rows):
        raise SystemExit("the values differ from the paper loop")
    return rows


if __name__ == "__main__":
    main()
