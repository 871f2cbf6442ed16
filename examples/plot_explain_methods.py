"""
Explain one model with Grad-CAM, Excitation Backprop, LRP and RAP
=================================================================

The four attribution methods of the paper, side by side on the same images and classes.
``apkit.explain(model, images, target, method=...)`` returns one map per (image, class) pair at
the input's resolution, whatever the method: Grad-CAM and Excitation Backprop work at a layer
(the model's ``attribution_layer``) and are upsampled; LRP and RAP propagate relevance down to
the pixels.

Each row of the figure is a held-out image and the class explained (left); each column a method.
Look at whether the hot regions sit on the named shape rather than on the clutter, and at how
much finer the pixel-level maps (LRP, RAP) are than the layer-level ones.
"""

import torch
from _common import dataset, output, teacher
from torch.utils.data import DataLoader

import apkit
from apkit.metrics import pointing_game, roc_auc
from apkit.viz import denormalize, plot_attribution_grid

model = teacher()
seg = dataset("seg")  # held-out images with exact masks
images, labels, masks = next(iter(DataLoader(seg, batch_size=len(seg))))

# One class per image: the one the model is most sure of among the classes present.
with torch.no_grad():
    logits = model(images)
classes = logits.masked_fill(labels == 0, float("-inf")).argmax(1)  # LongTensor (N,)

maps = {method: apkit.explain(model, images, classes, method=method)  # (N, H, W) each
        for method in ("gradcam", "excitation", "lrp", "rap")}

# How well does each method localize the shape?  Class k's pixels are those where mask == k + 1.
objects = masks == (classes + 1).view(-1, 1, 1)
print(f"Localization over {len(seg)} held-out images (1.0 is perfect; a random map scores 0.5 AUC):")
print("method       ROC-AUC   pointing game")
for method, values in maps.items():
    auc, hits = roc_auc(values, objects).nanmean(), pointing_game(values, objects).nanmean()
    print(f"{method:<11}  {auc:7.3f}   {hits:7.3f}")

shown = slice(0, 6)
path = plot_attribution_grid(denormalize(images[shown], seg.mean, seg.std),
                             {method: values[shown] for method, values in maps.items()},
                             output("explain_methods.png"),
                             row_titles=[seg.classes[k] for k in classes[shown]])
print(f"Saved {path}: one row per image (the class explained on the left), one column per method.")
