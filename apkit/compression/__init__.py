"""Compression with attribution preservation: distillation, structured and unstructured pruning, quantization.

:func:`compress` runs one method (``"kd"``, ``"structured"``, ``"unstructured"``, ``"ptq"``, ``"qat"``) with or
without an
attribution-matching regularizer (``"none"``, ``"ewa"``, ``"swa"``, ``"sswa"``) and returns the
compressed model with a :class:`CompressionRecord` (parameters, non-zero parameters, MACs,
sparsity, timings, validation metrics).  :func:`compress_checkpoint` does the same from a
checkpoint file and a dataset spec, as ``apkit compress``.  The building blocks are usable on
their own: :func:`prune_structured`, :func:`magnitude_prune` / :func:`bake_masks`,
:class:`DistillationLoss`, :func:`make_student` and :class:`CompressionObjective` (an objective for
:func:`apkit.training.fit`).

Examples
--------
>>> from apkit.compression import COMPRESSION_METHODS, default_settings
>>> COMPRESSION_METHODS.names()
['kd', 'structured', 'unstructured', 'ptq', 'qat']
>>> s = default_settings("structured", "quick")
>>> s.method_settings.pruning_ratio, s.train.epochs
(0.6, 2)
"""

from apkit.compression.api import COMPRESSION_METHODS, MODEL_FILE, RECORD_FILE, CompressionRecord, compress
from apkit.compression.distill import DistillationLoss, multilabel_kd_loss, softmax_kd_loss
from apkit.compression.objective import CompressionObjective
from apkit.compression.pipeline import compress_checkpoint
from apkit.compression.quantization import QuantizationSettings
from apkit.compression.settings import (
    DistillationSettings,
    MatchingSettings,
    Settings,
    StructuredSettings,
    UnstructuredSettings,
    default_settings,
    resolve_settings,
)
from apkit.compression.structured import conv_layer_names, paper_vgg16_ratios, prune_structured, vgg_config
from apkit.compression.students import make_student
from apkit.compression.unstructured import (
    attach_masks,
    bake_masks,
    clone_model,
    has_masks,
    iterative_sparsity,
    magnitude_prune,
    prunable_weights,
    sparsity_report,
)

__all__ = [
    "COMPRESSION_METHODS", "MODEL_FILE", "RECORD_FILE", "CompressionObjective", "CompressionRecord",
    "DistillationLoss", "DistillationSettings", "MatchingSettings", "QuantizationSettings", "Settings",
    "StructuredSettings",
    "UnstructuredSettings", "attach_masks", "bake_masks", "clone_model", "compress", "compress_checkpoint",
    "conv_layer_names", "default_settings", "has_masks", "iterative_sparsity", "magnitude_prune", "make_student",
    "multilabel_kd_loss", "paper_vgg16_ratios", "prunable_weights", "prune_structured", "resolve_settings",
    "softmax_kd_loss", "sparsity_report", "vgg_config",
]
