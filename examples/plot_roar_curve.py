"""
A ROAR curve: do the maps point at what matters?
================================================

RemOve And Retrain (Hooker et al., 2019; the paper's supplement E) tests attribution maps by
their consequences: for every image, the pixels a model's map ranks highest are replaced by the
dataset's mean colour, a fresh classifier is trained on the perturbed training images and scored
on the perturbed test images.  If the maps point at the evidence, the score drops quickly as
the removed fraction ``k`` grows; random maps are the baseline.

``apkit.evaluation.roar`` runs the grid (sources x fractions), caches maps and scores under
``cache_dir`` (an interrupted run resumes), and returns a table and the curves.  Look at whether
the teacher's Grad-CAM curve lies below the random one: the lower, the more informative the maps.
"""

from _common import DEVICE, FAST, IMAGE_SIZE, dataset, output, teacher

from apkit.evaluation import plot_roar, roar
from apkit.training import Recipe

model = teacher()
result = roar(
    {"teacher Grad-CAM": model, "random": "random"},
    dataset("train"), dataset("val"),
    Recipe(epochs=8 if FAST else 10, lr=0.05, batch_size=32, schedule="cosine"),
    method="gradcam",
    fractions=(0.1, 0.5, 0.9) if FAST else (0.1, 0.3, 0.5, 0.7, 0.9),
    classifier="vgg_small",  # the paper retrains a VGG-11; a small VGG suits the synthetic images
    classifier_options={"input_size": IMAGE_SIZE, "width_divisor": 4},
    metric="map_class",  # per-class mAP, threshold-free (the paper's Figure 3 shows F1)
    train_size=1000 if FAST else 2000,
    include_unperturbed=True,
    cache_dir=output("roar-cache"),
    device=DEVICE,
    progress=False,
)
print(result.table())
path = plot_roar(result, output("roar_curve.png"))
print(f"Saved {path}: mAP of the retrained classifier against the fraction of pixels removed.")
