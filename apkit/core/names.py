"""The names and defaults that the API and the command line share, in one torch-free module.

Every list of choices that more than one part of apkit offers, and every default that more than
one part applies, is written here once.  The command line builds its ``--help`` and its choices
from this module without importing torch; the registries and functions of the API check their
arguments against it.  (Names that belong to a single module, such as Grad-CAM's reductions,
stay in that module.)

Examples
--------
>>> from apkit.core import names
>>> names.REGULARIZER_NAMES, names.PAPER_WEIGHTS["swa"]
(('ewa', 'swa', 'sswa'), 50.0)
"""

from __future__ import annotations

__all__ = [
    "ATTRIBUTION_TITLES", "BENCH_PROFILE_NAMES", "COMPRESSION_METHOD_NAMES", "COMPRESSION_TITLES", "GATE_NAMES",
    "LAYER_KIND_NAMES", "MODEL_SPEC_HELP", "NAIVE", "PAPER_ATTRIBUTION_METHODS", "PAPER_DROP", "PAPER_MATCHING_SIZE",
    "PAPER_WEIGHTS", "PROTOCOL_NAMES",
    "REGULARIZER_CHOICES", "REGULARIZER_NAMES", "REGULARIZER_TITLES", "SCHEDULE_NAMES", "SETTINGS_PROFILE_NAMES",
    "SIMILARITY_PAIR_NAMES", "TARGET_POLICY_NAMES", "TASK_NAMES", "WEIGHT_BITS",
]

# ---------------------------------------------------------------------------------------- attribution
#: The four attribution methods the paper evaluates (every Captum method is available besides).
PAPER_ATTRIBUTION_METHODS = ("gradcam", "excitation", "lrp", "rap")
ATTRIBUTION_TITLES = {"gradcam": "Grad-CAM", "excitation": "Excitation BP", "lrp": "LRP α1β0", "rap": "RAP"}
#: Which classes to explain: every ground-truth class of an image ("label", the paper's
#: localization protocol), the explained model's top-1 ("own"), the teacher's top-1 ("teacher",
#: the regularizer's and the ImageNet protocol's choice), or the ground-truth class the explained
#: model scores highest, one per image ("top_label", ROAR's choice on labelled data).
TARGET_POLICY_NAMES = ("label", "own", "teacher", "top_label")
#: Default layers a model names: for attribution maps, and for attribution matching.
LAYER_KIND_NAMES = ("attribution", "matching")

#: How a model is named to apkit.models.resolve_model and to the command line's --teacher/--student.
MODEL_SPEC_HELP = ("PATH of an apkit checkpoint, or ARCH=PATH: ARCH is torchvision:NAME, package.module:factory or an "
                   "apkit model name (`apkit list`); PATH a state_dict (.pt/.pth) or .safetensors file, e.g. "
                   "torchvision:resnet18=runs/pruned.safetensors")

# ---------------------------------------------------------------------------------------- compression
COMPRESSION_METHOD_NAMES = ("kd", "structured", "unstructured", "ptq", "qat")
COMPRESSION_TITLES = {
    "kd": "Knowledge distillation", "structured": "Structured pruning", "unstructured": "Unstructured pruning",
    "ptq": "Post-training quantization", "qat": "Quantization-aware training",
    "qat-2bit": "Quantization-aware training, 2-bit weights",
    "unstructured-60": "Unstructured pruning, 60 %", "unstructured-90": "Unstructured pruning, 90 %",
}
#: Weight bit-widths of ptq and qat (per output channel, symmetric; 2 is ternary).
WEIGHT_BITS = (8, 4, 2)
#: Named settings of a compression run (see ``apkit.compression.default_settings``).
SETTINGS_PROFILE_NAMES = ("quick", "paper", "imagenet")

# ---------------------------------------------------------------------------------------- regularizers
REGULARIZER_NAMES = ("ewa", "swa", "sswa")
#: The paper's "Naive" baseline: a compression without an attribution-matching regularizer.
NAIVE = "none"
#: What a compression takes as its ``regularizer``.
REGULARIZER_CHOICES = (NAIVE, *REGULARIZER_NAMES)
REGULARIZER_TITLES = {NAIVE: "Naive", "ewa": "EWA", "swa": "SWA", "sswa": "SSWA"}
#: Regularizer strengths lambda of the paper's supplement (C.2), calibrated on VGG16's 7x7 pool5 map.
PAPER_WEIGHTS = {"ewa": 100.0, "swa": 50.0, "sswa": 50.0}
#: Fraction of the teacher's channels SSWA leaves out per batch (the reference code's README).
PAPER_DROP = 0.3
#: The side of the map the paper matches: VGG16's fifth max-pool at 227x227 input.
PAPER_MATCHING_SIZE = 7

# ---------------------------------------------------------------------------------------- evaluation
#: Which (image, class) pairs the localization protocol scores: "voc", every ground-truth class the
#: model predicts (METHOD §4.2); "imagenet", the model's top-1 class against the object mask;
#: "teacher", the teacher's top-1 class for every image (the same pairs for every model; the
#: default for single-label data), scored on localization where the image has a mask.
PROTOCOL_NAMES = ("voc", "imagenet", "teacher")
#: Which pairs the similarity to the teacher's maps uses (see ``apkit.evaluation.localization``).
SIMILARITY_PAIR_NAMES = ("kept", "both", "all")

#: Release gates of an audit (``--fail-under NAME=VALUE``), each judged on its interval's pessimistic
#: end: a similarity at least VALUE (``cos``), a distance at most VALUE (``l2``), or a drop against
#: the teacher of at most VALUE (the ``*_drop`` gates; scores as fractions, e.g. 0.01 = one point).
#: ``agreement`` is a top-1 agreement with the teacher of at least VALUE; ``deletion_rise`` a rise of
#: the deletion score (student minus teacher) of at most VALUE.
GATE_NAMES = ("cos", "l2", "auc_drop", "pointing_drop", "map_drop", "map_class_drop", "f1_drop", "top1_drop",
              "top5_drop", "agreement", "deletion_rise", "insertion_drop", "road_drop")

# ---------------------------------------------------------------------------------------- training
TASK_NAMES = ("multilabel", "multiclass")
SCHEDULE_NAMES = ("step", "cosine")

# ---------------------------------------------------------------------------------------- benchmark
BENCH_PROFILE_NAMES = ("smoke", "default", "voc", "imagenet")
