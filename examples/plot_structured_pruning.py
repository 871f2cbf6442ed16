"""
Structured pruning with attribution preservation
================================================

Structured pruning removes whole filters, so the pruned network is genuinely smaller and
faster.  This example uses apkit's building blocks instead of the one-call
``apkit.compression.compress``, to show where each piece fits in your own training code:

1. ``prune_structured`` removes 60 % of the filters of every conv layer (smallest L1 norm first,
   with Torch-Pruning keeping the network consistent);
2. the pruned copy is fine-tuned twice with ``apkit.training.fit``: once on the task loss alone,
   once with a ``CompressionObjective`` that adds ``AttributionMatchingLoss("swa")``, which pulls
   the student's attribution maps towards the teacher's;
3. ``localization_scores`` measures both against the masks and against the teacher's maps.

In the bar chart, compare the naive and the SWA model on AUC and pointing (localization) and on
cosine similarity to the teacher's maps, at similar mAP.
"""

import copy

import matplotlib.pyplot as plt
import torch
from _common import DEVICE, FAST, IMAGE_SIZE, dataset, output, teacher

from apkit.compression import CompressionObjective, prune_structured
from apkit.evaluation import localization_scores
from apkit.models import count_parameters
from apkit.regularizers import AttributionMatchingLoss
from apkit.training import Recipe, evaluate, fit

original = teacher()
train, val, seg = dataset("train"), dataset("val"), dataset("seg")

pruned = prune_structured(original, example_inputs=torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE), pruning_ratio=0.6)
print(f"Filters pruned: {count_parameters(original):,} -> {count_parameters(pruned):,} parameters; "
      f"mAP right after pruning {evaluate(pruned, val, device=DEVICE)['map_image']:.3f}")

models = {"teacher": original}
for name, regularizer in (("naive", None), ("SWA", AttributionMatchingLoss("swa", weight=50.0))):
    student = copy.deepcopy(pruned)
    objective = None if regularizer is None else CompressionObjective(original, regularizer=regularizer)
    fit(student, train, Recipe(epochs=1 if FAST else 2, batch_size=64, lr=0.01), val_set=val, objective=objective,
        device=DEVICE, progress=False)
    models[name] = student.eval()

columns = {"mAP": [], "AUC": [], "pointing": [], "cos to teacher": []}
print("model     mAP    AUC    pointing  cos to teacher")
for name, model in models.items():
    scores = localization_scores(model, seg, teacher=None if model is original else original, device=DEVICE,
                                 progress=False).summary()
    row = [evaluate(model, val, device=DEVICE)["map_image"], scores["auc"], scores["pointing"], scores["cos"]]
    for column, value in zip(columns, row):
        columns[column].append(value)
    print(f"{name:<8} " + "  ".join(f"{v:6.3f}" for v in row))

figure, axis = plt.subplots(figsize=(6, 3))
width = 0.8 / len(models)
for i, name in enumerate(models):
    axis.bar([c + i * width for c in range(len(columns))], [v[i] for v in columns.values()], width, label=name)
axis.set_xticks([c + width * (len(models) - 1) / 2 for c in range(len(columns))], list(columns))
axis.set_ylim(0, 1)
axis.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
axis.set_title("Structured pruning (60 % of filters): naive vs SWA fine-tuning", fontsize=9)
figure.savefig(output("structured_pruning.png"), dpi=110, bbox_inches="tight")
print(f"Saved {output('structured_pruning.png')}: one group of bars per metric (the teacher has no cos).")
