"""
Audit a compressed model against its original
=============================================

A pruned model can keep its accuracy and still explain its predictions differently.
``audit(teacher, students, dataset)`` (from ``apkit.audit``) measures both, on a dataset with masks:

* predictive metrics of every model (the paper's per-image mAP, per-class mAP, F1);
* per attribution method, how well the maps localize the objects (ROC-AUC and pointing game
  against the masks) and how close each student's maps are to the teacher's on the same
  (image, class) pairs (cosine similarity, normalized L2 distance).

Here the student is the teacher with 90 % of its convolution weights removed by magnitude
pruning and briefly fine-tuned (``apkit.compression.compress``).  Compare the rows: the
predictive columns say what the pruning cost in accuracy, the attribution columns whether the
explanations survived it.
"""

import torch
from _common import DEVICE, FAST, dataset, output, teacher
from torch.utils.data import DataLoader

import apkit
from apkit.compression import compress
from apkit.evaluation import audit
from apkit.metrics import cosine_similarity
from apkit.viz import denormalize, plot_attribution_grid

original = teacher()
pruned, record = compress(original, "unstructured", "none", train_set=dataset("train"), val_set=dataset("val"),
                          settings="quick", amount=0.9, epochs=1 if FAST else 2, device=DEVICE, progress=False)
print(f"Pruned: {record.weight_sparsity:.0%} of the conv weights are zero, "
      f"{record.nonzero_params:,} of {record.teacher['params']:,} parameters remain.")

seg = dataset("seg")
report = audit(original, {"pruned 90%": pruned}, seg, attribution_methods=("gradcam", "lrp"), device=DEVICE,
               progress=False)
print(report.to_markdown())
paths = report.save(output("audit"))  # report.md, report.csv, report.json (with per-pair values)
print(f"Saved {paths['markdown']} and the per-pair values in {paths['json']}")

# The maps behind the numbers: the teacher's and the student's Grad-CAM for the same classes.
images, labels, _ = next(iter(DataLoader(seg, batch_size=6)))
with torch.no_grad():
    classes = original(images).masked_fill(labels == 0, float("-inf")).argmax(1)
maps = {name: apkit.explain(model, images, classes, method="gradcam")
        for name, model in {"teacher": original, "pruned 90%": pruned}.items()}
similarity = cosine_similarity(maps["teacher"], maps["pruned 90%"])
path = plot_attribution_grid(denormalize(images, seg.mean, seg.std), maps, output("audit_maps.png"),
                             row_titles=[f"{seg.classes[k]} (cos {c:.2f})" for k, c in zip(classes, similarity)])
print(f"Saved {path}: the teacher's and the pruned model's Grad-CAM per image, with their cosine similarity.")
