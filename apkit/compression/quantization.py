"""Quantization: post-training static quantization (``ptq``) and quantization-aware training (``qat``).

Both use PyTorch's FX graph mode quantization (:mod:`apkit.models.quantized`, and
``docs/quantization.md`` for the choice): weights per output channel at ``bits`` bits (8 or 4),
activations per tensor at 8 bits, and the x86 int8 kernels.

* ``ptq`` observes ``calibration_batches`` batches of training images (in order, no augmentation
  beyond the dataset's own), then converts.  Nothing is trained, so it takes no regularizer.
* ``qat`` inserts torch's fake quantizers (straight-through gradients) into a copy of the
  teacher, fine-tunes that copy with the task loss and, optionally, an attribution-matching
  regularizer (QAT + SWA: the fake-quant copy is the student, and the regularizer's Grad-CAM
  hooks sit on its layers), then converts it.

Either returns a :class:`~apkit.models.quantized.QuantizedModel`; the run's record gets a
``quantization`` entry: the bit-widths, the saved state dict's size in bytes and the CPU latency
of one batch, each against the float teacher, and how closely the fake-quant twin (on which
attribution runs) reproduces the int8 logits.

Examples
--------
>>> s = QuantizationSettings(bits=4)
>>> s.bits, s.calibration_batches
(4, 8)
>>> check_method_regularizer("ptq", "swa")
Traceback (most recent call last):
...
apkit.core.errors.ValidationError: method 'ptq' (post-training quantization) trains nothing, so it takes no \
regularizer, got 'swa'; use regularizer 'none', or method 'qat' to train with one
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from apkit.core.errors import ValidationError
from apkit.core.names import NAIVE
from apkit.core.validation import check_int
from apkit.models.quantized import (
    ACTIVATION_BITS,
    BACKEND,
    LATENCY_BATCH,
    QuantizedModel,
    architecture_of,
    check_bits,
    convert,
    prepare,
    quantize_static,
    quantized_twin,
    size_and_speed,
    twin_agreement,
)

__all__ = ["QuantizationSettings", "check_method_regularizer", "run_ptq", "run_qat"]


@dataclass(frozen=True)
class QuantizationSettings:
    """Quantization (``ptq`` and ``qat``).

    Attributes
    ----------
    bits : {8, 4}
        Weight bit-width (per output channel, symmetric); activations are 8-bit.
    calibration_batches : int
        ``ptq``: batches of training images the observers see before conversion.
    """

    bits: int = 8
    calibration_batches: int = 8

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_int(self.calibration_batches, "calibration_batches", minimum=1)


def check_method_regularizer(method: str, regularizer: str) -> None:
    """Refuse a regularizer with ``ptq``, which trains nothing (checked before any work)."""
    if method == "ptq" and regularizer != NAIVE:
        raise ValidationError(f"method 'ptq' (post-training quantization) trains nothing, so it takes no regularizer, "
                              f"got {regularizer!r}; use regularizer {NAIVE!r}, or method 'qat' to train with one")


def _check_savable(run) -> None:
    """A run that saves its model needs the teacher's float architecture (checked before any work)."""
    if run.out is not None and not architecture_of(run.teacher):
        raise ValidationError(
            f"the int8 model of a {type(run.teacher).__name__} could not be saved: apkit rebuilds a quantized model "
            "from its float architecture, which this teacher does not record; pass a model built by "
            "apkit.models.create or apkit.models.resolve_model('torchvision:NAME=PATH'), or out_dir=None")


def _images(dataset: Any, count: int, offset: int = 0) -> torch.Tensor:
    """Up to ``count`` images of ``dataset`` from ``offset`` on, as one batch."""
    stop = min(len(dataset), offset + count)
    return torch.stack([dataset[i][0] for i in range(offset, stop)]).float()


def _calibration_batches(run, batches: int):
    size = run.settings.train.batch_size
    for index in range(batches):
        if index * size >= len(run.train_set):
            return
        yield _images(run.train_set, size, index * size)


def _summary(run, model: QuantizedModel) -> dict[str, Any]:
    """Bits, size and CPU latency against the float teacher, and the twin's agreement, for the record."""
    images = _images(run.train_set, LATENCY_BATCH)
    return {"bits": model.bits, "activation_bits": ACTIVATION_BITS, "backend": BACKEND,
            **size_and_speed(model, run.teacher, images),
            "twin": twin_agreement(model, quantized_twin(model), images)}


def run_ptq(run) -> nn.Module:
    """Static post-training quantization of ``run.teacher``, calibrated on its training images."""
    s = run.settings.method_settings
    _check_savable(run)
    began = time.perf_counter()
    model = quantize_static(run.teacher, _calibration_batches(run, s.calibration_batches), bits=s.bits)
    run.timings["quantize_s"] = time.perf_counter() - began
    run.extra["quantization"] = _summary(run, model)
    return model


def run_qat(run) -> nn.Module:
    """Quantization-aware fine-tuning of a fake-quant copy of ``run.teacher``, optionally with attribution matching."""
    s = run.settings.method_settings
    _check_savable(run)
    example = run.example_inputs.cpu()
    student = prepare(run.teacher, example, bits=s.bits, qat=True).to(run.device)
    result = run.fit(student, run.objective(student), "train")
    run.extra.update(best_epoch=result.best_epoch, best_metrics=result.best_metrics, history=result.history)
    began = time.perf_counter()
    model = convert(student.eval(), bits=s.bits, arch=architecture_of(run.teacher), input_shape=tuple(example.shape))
    run.timings["quantize_s"] = time.perf_counter() - began
    run.extra["quantization"] = _summary(run, model)
    return model
