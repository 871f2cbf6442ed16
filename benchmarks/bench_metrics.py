"""ROC-AUC and pointing game: apkit's batched metrics against the paper's per-map scikit-learn loop.

The paper's evaluation script (METHOD §4.2) scores one map at a time: min-max normalise the map,
``sklearn.metrics.roc_curve`` + ``auc`` against the class mask, and the first ``np.where`` arg-max
for the pointing game.  This script times that loop and ``apkit.metrics`` on the same maps in one
process, checks that the values are the same, and also times Quantus's ``AUC`` and
``PointingGame`` when Quantus is installed (it is not a dependency of apkit).

The maps imitate Grad-CAM at VGG16's conv5_3: a ReLU'd 14x14 map upsampled bilinearly to the
input size; the masks are random blobs.

Run:  python benchmarks/bench_metrics.py [--maps 2000] [--size 227] [--threads N] [--no-quantus]

By default torch runs on one thread, as the scikit-learn loop does, so the ratio compares one core
with one core.  (On a machine busy with other work, torch's multi-threaded kernels can be much
slower than single-threaded ones: each parallel region waits for a descheduled thread.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import auc, roc_curve

from apkit.metrics import pointing_game, roc_auc
from apkit.metrics.protocol import normalize_maps


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


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=2000)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the paper loop uses one core; 0 keeps torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-quantus", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    maps, masks = make_data(args.maps, args.size, args.seed)
    maps_np, masks_np = maps.numpy(), masks.numpy()
    apkit_metrics(maps[:4], masks[:4])  # warm-up

    rows = []
    t_paper, (paper_auc, paper_hit) = timed(paper_loop, maps_np, masks_np)
    rows.append(("paper loop (sklearn roc_curve + auc, np.where)", t_paper))
    t_apkit, (ours_auc, ours_hit) = timed(apkit_metrics, maps, masks)
    rows.append((f"apkit.metrics (torch, {torch.get_num_threads()} thread(s))", t_apkit))
    np.testing.assert_allclose(ours_auc.numpy(), paper_auc, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(ours_hit.numpy(), paper_hit)
    checks = ["AUC equal to 1e-9 and pointing hits identical to the paper loop"]

    if not args.no_quantus:
        try:
            import quantus  # noqa: F401
        except ImportError:
            checks.append("Quantus is not installed: skipped")
        else:
            t_quantus, (q_auc, q_hit) = timed(quantus_metrics, maps_np, masks_np)
            rows.append(("Quantus AUC + PointingGame", t_quantus))
            np.testing.assert_allclose(q_auc, paper_auc, rtol=0, atol=1e-9)
            # Quantus counts a hit when any tied maximum is on the mask; the maps have one maximum.
            np.testing.assert_array_equal(q_hit, paper_hit)
            checks.append("Quantus values equal too")

    print(f"{args.maps} maps of {args.size}x{args.size}, AUC + pointing game, CPU")
    print(f"{'implementation':<52} {'seconds':>9} {'ms / map':>9} {'speed-up vs paper loop':>24}")
    for name, seconds in rows:
        print(f"{name:<52} {seconds:9.3f} {1000 * seconds / args.maps:9.3f} {t_paper / seconds:23.1f}x")
    print("; ".join(checks))
    print(f"mean AUC {paper_auc.mean():.4f}, pointing accuracy {paper_hit.mean():.4f}")


if __name__ == "__main__":
    main()
