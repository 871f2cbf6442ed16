"""The paper's published numbers (supplement Tables 1–4), shown beside ours when a profile is the paper's.

Values are percentages as printed in the supplement, except Cos (a fraction) and L2 (units of 1e-5).
"""

from __future__ import annotations

METHOD_ORDER = ("gradcam", "excitation", "lrp", "rap")

# Supplement Tables 1 and 2: naive compression on PASCAL VOC 2012; columns follow METHOD_ORDER.
VOC_AUC = {
    "teacher": (88.79, 84.14, 85.29, 84.54),
    "kd": (78.74, 76.31, 79.60, 80.85),
    "structured": (79.98, 79.03, 81.60, 79.30),
    "unstructured": (84.72, 81.99, 81.55, 81.16),
}
VOC_POINTING = {
    "teacher": (80.21, 74.80, 65.48, 69.49),
    "kd": (67.26, 66.31, 53.43, 56.87),
    "structured": (75.29, 69.22, 61.13, 65.01),
    "unstructured": (75.43, 70.28, 60.23, 65.26),
}

# Supplement Table 3 (ImageNet, one-shot unstructured) and Table 4 (ImageNet, structured ResNet-34):
# (Top-1, AUC, Point Acc, Cos, L2 x 1e-5) per regularizer.
IMAGENET = {
    "unstructured-60": {
        "none": (73.31, 76.01, 91.21, 0.975, 1.614), "ewa": (73.33, 76.52, 91.63, 0.977, 1.603),
        "swa": (73.36, 79.82, 91.67, 0.980, 1.26), "sswa": (73.32, 80.88, 91.78, 0.981, 1.206),
    },
    "unstructured-90": {
        "none": (70.38, 75.43, 90.39, 0.925, 4.80), "ewa": (70.52, 75.68, 90.75, 0.919, 5.18),
        "swa": (70.48, 79.85, 91.35, 0.939, 3.88), "sswa": (70.46, 80.63, 90.93, 0.939, 3.87),
    },
    "structured": {
        "none": (70.06, 81.20, 83.96, 0.982, 2.248), "swa": (70.102, 84.70, 88.33, 0.988, 1.550),
        "sswa": (70.486, 84.65, 88.51, 0.988, 1.521),
    },
}
