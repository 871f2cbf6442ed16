"""
Distil with and without SWA, and compare the students' maps
===========================================================

Knowledge distillation trains a narrow student to reproduce the teacher's outputs; nothing asks
it to look at the same pixels.  The sensitivity-weighted attribution-matching regularizer (SWA)
adds that request: at the matching layer, the student's Grad-CAM-like map for the teacher's
top-1 class must stay close to the teacher's (``regularizer="swa"``, weight 50 by default).

Two students of half the teacher's width are distilled with identical settings, one naively and
one with SWA.  Look at the "Cos" and "L2" columns (similarity to the teacher's maps) and at
the AUC, and at whether the SWA student's maps in the figure follow the teacher's more closely.
With ``APKIT_FAST=1`` the students train for a few epochs only, so differences are small and
noisy; run without it (or ``apkit bench``) for a fair comparison.
"""

import torch
from _common import DEVICE, FAST, dataset, output, teacher
from torch.utils.data import DataLoader

import apkit
from apkit.compression import compress
from apkit.evaluation import audit
from apkit.viz import denormalize, plot_attribution_grid

original = teacher()
train, val, seg = dataset("train"), dataset("val"), dataset("seg")

students = {}
for reg, name in (("none", "KD"), ("swa", "KD + SWA")):
    students[name], record = compress(original, "kd", reg, train_set=train, val_set=val, settings="quick",
                                      width_divisor=2, epochs=3 if FAST else 8, device=DEVICE, progress=False)
    print(f"{name}: {record.params:,} parameters ({record.compression_ratio:.1f}x fewer), "
          f"validation mAP {record.val['map_image']:.3f}, training {record.timings['finetune_s']:.0f} s")

report = audit(original, students, seg, attribution_methods=("gradcam",), device=DEVICE, progress=False)
print(report.to_markdown())

# Teacher and students side by side, for the class the teacher is most sure of in each image.
images, labels, _ = next(iter(DataLoader(seg, batch_size=6)))
with torch.no_grad():
    classes = original(images).masked_fill(labels == 0, float("-inf")).argmax(1)
models = {"teacher": original, **students}
maps = {name: apkit.explain(model, images, classes, method="gradcam") for name, model in models.items()}
path = plot_attribution_grid(denormalize(images, seg.mean, seg.std), maps, output("distill_swa.png"),
                             row_titles=[seg.classes[k] for k in classes])
print(f"Saved {path}: Grad-CAM of the teacher, the naive student and the SWA student.")
