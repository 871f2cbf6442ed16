"""
The metrics on your own maps and masks
======================================

apkit's metrics are plain functions over batched tensors: maps ``(N, H, W)`` and binary masks
``(N, H, W)`` in, one value per map ``(N,)`` out, NaN where a value is undefined.  They work on
maps from any tool, on any device; no model is needed.

* ``roc_auc``: how well the map's values separate object pixels from the rest (0.5 = chance);
  it equals scikit-learn's ``roc_auc_score`` on the flattened pixels.
* ``pointing_game``: 1 if the map's maximum falls on the object (optionally within a tolerance
  of a few pixels), else 0.
* ``cosine_similarity`` and ``normalized_l2``: how close two maps are (used to compare a
  compressed model's maps with the original's).

Below, four hand-made maps are scored against one disc-shaped object.  Look at how "beside it"
keeps a high AUC but misses the strict pointing game, and hits it with a 4-pixel tolerance.
"""

import matplotlib.pyplot as plt
import torch
from _common import output
from sklearn.metrics import roc_auc_score

from apkit.metrics import cosine_similarity, normalized_l2, pointing_game, roc_auc

size = 48
y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")


def blob(cy, cx, sigma=6.0):
    """A Gaussian bump centred at pixel (cy, cx)."""
    return torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


disc = (y - 20) ** 2 + (x - 28) ** 2 <= 9**2  # the object: a disc of radius 9 around (20, 28)
torch.manual_seed(0)
maps = {"on the object": blob(20, 28), "beside it": blob(20, 40), "far away": blob(38, 8),
        "noise": torch.rand(size, size)}
stack = torch.stack(list(maps.values()))  # (4, H, W): one map per row
masks = disc.expand_as(stack)  # the same object for every map
reference = maps["on the object"].expand_as(stack)  # compare every map with the first one

scores = {"AUC": roc_auc(stack, masks), "pointing": pointing_game(stack, masks),
          "pointing@4px": pointing_game(stack, masks, tolerance=4),
          "cos to first": cosine_similarity(stack, reference), "L2 to first": normalized_l2(stack, reference)}
print(f"{'map':<14}" + "".join(f"{name:>14}" for name in scores))
for i, name in enumerate(maps):
    print(f"{name:<14}" + "".join(f"{float(values[i]):14.3f}" for values in scores.values()))

sklearn_auc = roc_auc_score(disc.flatten().numpy(), maps["noise"].flatten().numpy())
print(f"\nroc_auc of the noise map {float(scores['AUC'][3]):.6f} = scikit-learn's {sklearn_auc:.6f}")
empty = torch.zeros(1, size, size, dtype=torch.bool)
print(f"A mask without object pixels has no AUC: {roc_auc(stack[:1], empty).tolist()}; "
      "average with torch.nanmean to skip such maps.")

figure, axes = plt.subplots(1, len(maps), figsize=(2.4 * len(maps), 2.8))
for i, (axis, (name, values)) in enumerate(zip(axes, maps.items())):
    axis.imshow(values, cmap="jet")
    axis.contour(disc.float(), levels=[0.5], colors="white", linewidths=1.5)
    axis.set_title(f"{name}\nAUC {float(scores['AUC'][i]):.2f}, point {float(scores['pointing'][i]):.0f}, "
                   f"cos {float(scores['cos to first'][i]):.2f}", fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])
figure.savefig(output("metrics_own_maps.png"), dpi=110, bbox_inches="tight")
print(f"Saved {output('metrics_own_maps.png')}: each map with the object's outline (white) and its scores.")
