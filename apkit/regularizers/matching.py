"""Attribution matching: make a student's collapsed attribution map look like its teacher's.

Three maps, all built from the feature map ``A`` (``B x K x h x w``) at a *matching layer*
(by default the model's ``matching_layer``, e.g. the fifth max-pool of VGG16 at 7x7):

* **EWA** (equally weighted): ``M = mean_k A_k**2`` - no class, no gradient.
* **SWA** (sensitivity weighted): for the teacher's top-1 class ``c``,
  ``alpha_k = sum_hw dz_c/dA[k, h, w]`` and ``M = ReLU(sum_k alpha_k A_k)``.  The teacher's map is
  detached; the student's map is differentiable through ``alpha`` as well (second order,
  ``create_graph=True``).
* **SSWA** (stochastic SWA): SWA where a random fraction ``drop`` of the *teacher's* channels is
  left out of the weighted sum, one draw per batch from a seeded ``torch.Generator`` (so every
  process of a distributed run draws the same channels).

The loss is the mean over batch and positions of the squared difference of the L2-normalised,
flattened maps, times the weight: ``weight * (2 - 2 cos) / (h w)``.  ``weight`` is on the paper's
scale (lambda: 100 for EWA, 50 for SWA and SSWA, calibrated on VGG16's 7x7 pool5 map) and is
multiplied by ``h w / 49`` for a map of another size (:func:`scaled_weight`), so that it
pulls on the cosine as hard as the paper's did: unscaled, 50 on a 3x3 map pulls about 5x harder and
wrecks distillation (docs/reproduction.md has the ablation).  ``scale_weight=False`` uses the
weight as it is.  Teacher and student may differ in width or architecture; their
maps must have the same spatial size, or pass ``resize=True`` to resize the student's map
(bilinear) to the teacher's.

One teacher pass (:meth:`AttributionMatchingLoss.teacher_pass`) gives the teacher's logits,
target class and map, so a distillation term can reuse the same teacher forward.  The teacher is
evaluated in eval mode (its previous mode is restored), no gradient is accumulated in it, and no
hook is left on it.  The SWA maps are Grad-CAM's (:func:`apkit.attribution.channel_weights` with
the paper's sum over positions, then :func:`apkit.attribution.class_activation_map`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from apkit.attribution import channel_weights, class_activation_map
from apkit.core.errors import ValidationError
from apkit.core.modules import called_output, capture_outputs, evaluating, feature_map, overwritten_in_place, unwrap
from apkit.core.names import PAPER_DROP, PAPER_MATCHING_SIZE, PAPER_WEIGHTS, REGULARIZER_NAMES
from apkit.core.validation import check_choice, check_float, check_fraction, check_int, check_same_shape, check_tensor
from apkit.models import default_layer

__all__ = ["AttributionMatchingLoss", "TeacherEvidence", "TeacherPass", "ewa_map", "matching_distance", "scaled_weight",
           "swa_map"]

_PURPOSE = "attribution matching"


@dataclass(frozen=True)
class TeacherEvidence:
    """What the teacher's map of a batch is built from (all tensors detached).

    It does not depend on the batch it came from, so a training set whose images never change can
    have it computed once per image and reused every epoch (:class:`apkit.compression.TeacherCache`).

    Attributes
    ----------
    logits : torch.Tensor
        ``(B, classes)`` teacher logits.
    target : torch.Tensor
        ``(B,)`` class whose map is matched (the teacher's top-1 unless given).
    activations : torch.Tensor
        ``(B, K, h, w)`` the teacher's feature map at the matching layer.
    alpha : torch.Tensor or None
        ``(B, K)`` SWA's channel weights (the sum over positions of d z_target / dA); None for EWA.
    """

    logits: torch.Tensor
    target: torch.Tensor
    activations: torch.Tensor
    alpha: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> TeacherEvidence:
        """The evidence of the images ``index`` (a LongTensor of positions)."""
        return TeacherEvidence(self.logits[index], self.target[index], self.activations[index],
                               None if self.alpha is None else self.alpha[index])


@dataclass(frozen=True)
class TeacherPass:
    """What one teacher forward gives a training step (all tensors detached).

    Attributes
    ----------
    logits : torch.Tensor
        ``(B, classes)`` teacher logits (for distillation).
    target : torch.Tensor
        ``(B,)`` class whose map is matched (the teacher's top-1 unless given).
    map : torch.Tensor
        ``(B, h, w)`` teacher map at the matching layer (SSWA: with channels left out).
    dropped : torch.Tensor or None
        Indices of the teacher channels SSWA left out in this batch.
    """

    logits: torch.Tensor
    target: torch.Tensor
    map: torch.Tensor
    dropped: torch.Tensor | None = None


def ewa_map(activations: torch.Tensor) -> torch.Tensor:
    """Equally weighted map: the mean over channels of the squared activations, ``(B, h, w)``.

    Examples
    --------
    >>> ewa_map(torch.tensor([[[[1.0]], [[3.0]]]]))
    tensor([[[5.]]])
    """
    check_tensor(activations, "activations", ndim=4, floating=True)
    return activations.pow(2).mean(1)


def swa_map(
    activations: torch.Tensor, gradients: torch.Tensor, *, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Sensitivity-weighted map ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k = sum_hw grad[k]``.

    Parameters
    ----------
    activations, gradients : torch.Tensor
        ``(B, K, h, w)`` feature map and the gradient of the target logit with respect to it.
    keep : torch.Tensor, optional
        ``(K,)`` 0/1 channel weights; channels with 0 are left out of the sum (SSWA).

    Examples
    --------
    >>> a = torch.ones(1, 2, 1, 2)
    >>> g = torch.tensor([[[[1.0, 1.0]], [[-0.5, -0.5]]]])
    >>> swa_map(a, g)
    tensor([[[1., 1.]]])
    """
    check_tensor(activations, "activations", ndim=4, floating=True)
    check_tensor(gradients, "gradients", ndim=4, floating=True)
    check_same_shape(activations, gradients, "activations", "gradients")
    alpha = gradients.sum((2, 3))  # a sum over positions, as in the paper; the scale cancels later
    if keep is not None:
        alpha = alpha * keep.to(alpha)
    return class_activation_map(alpha, activations)


def matching_distance(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Mean over batch and positions of ``(normalize(teacher) - normalize(student))**2``.

    Each map is flattened and divided by its L2 norm (at least 1e-12).  For unit maps this is
    ``(2 - 2 cos) / (h w)`` averaged over the batch.

    Examples
    --------
    >>> a = torch.tensor([[[3.0, 4.0]]])
    >>> float(matching_distance(a, 2 * a))
    0.0
    >>> float(matching_distance(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])))
    1.0
    """
    check_tensor(student_map, "student_map", ndim=3, floating=True)
    check_tensor(teacher_map, "teacher_map", ndim=3, floating=True)
    if student_map.shape != teacher_map.shape:
        raise ValidationError(
            f"student and teacher maps must have the same shape, got {tuple(student_map.shape)} and "
            f"{tuple(teacher_map.shape)}; match layers of equal spatial size or use resize=True"
        )
    s = F.normalize(student_map.flatten(1), dim=1, eps=1e-12)
    t = F.normalize(teacher_map.flatten(1), dim=1, eps=1e-12)
    return (t - s).pow(2).mean()


def scaled_weight(weight: float, *, height: int, width: int) -> float:
    """A regularizer weight given on the paper's scale, for a matching map of ``height x width``.

    The matching loss is ``weight * (2 - 2 cos) / (h * w)`` per image, so the paper's weights, set
    for VGG16's 7x7 map, pull harder on smaller maps (5x on a 3x3 one).  Scaling them by
    ``h * w / 49`` keeps the pull on the cosine the paper's at any map size; at 7x7 it changes nothing.

    Examples
    --------
    >>> scaled_weight(50.0, height=7, width=7), round(scaled_weight(50.0, height=3, width=3), 3)
    (50.0, 9.184)
    """
    return weight * height * width / PAPER_MATCHING_SIZE**2


def _in_place_error(layer: str) -> ValidationError:
    return ValidationError(
        f"the output of matching layer {layer!r} is modified in place by the next layer; "
        "match at that next layer (e.g. the ReLU after a conv) instead"
    )


def _forward_with_map(student: nn.Module, layer: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and the matching-layer feature map of one forward pass."""
    with capture_outputs(student, [layer], replace=lambda _name, out: feature_map(out, layer, _PURPOSE)) as store:
        logits = student(images)
    activations = called_output(store, layer)
    if overwritten_in_place(store, layer):  # its recorded values would silently have changed
        raise _in_place_error(layer)
    return logits, activations


def _teacher_head_graph(teacher: nn.Module, layer: str, images: torch.Tensor):
    """Teacher forward that records autograd only *after* ``layer``.

    The layers before the matching layer run under ``no_grad`` (as a plain teacher forward would)
    and the layer's output is replaced by a detached leaf that requires grad, from which grad mode
    is switched on for the rest of the forward.  So d(logit)/dA costs only a backward through the
    head, and no gradient can reach the teacher's parameters.
    """

    def leaf(_name, output):
        output = feature_map(output, layer, _PURPOSE).detach().requires_grad_(True)
        torch.set_grad_enabled(True)  # undone when the enclosing no_grad block exits
        return output

    try:
        with capture_outputs(teacher, [layer], replace=leaf) as store, torch.no_grad():
            logits = teacher(images)
    except RuntimeError as exc:
        if "in-place" in str(exc) or "inplace" in str(exc):
            raise _in_place_error(layer) from exc
        raise
    return logits, called_output(store, layer)


def _check_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    check_tensor(target, "target", ndim=1)
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValidationError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape[0] != logits.shape[0]:
        raise ValidationError(f"target must have one class per image ({logits.shape[0]}), got {target.shape[0]}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValidationError(f"target classes must lie in [0, {logits.shape[1] - 1}]")
    return target.to(logits.device).long()


class AttributionMatchingLoss(nn.Module):
    """Attribution-matching regularizer (EWA, SWA or SSWA) as a loss module.

    Parameters
    ----------
    regularizer : {"ewa", "swa", "sswa"}
        Which collapsed map is matched (``kind=`` is the old name, kept for one release).
    teacher_layer, student_layer : str, optional
        Dotted names of the matching layers; default: each model's ``matching_layer`` (see
        :func:`apkit.models.default_layer`).  The output must not be modified in place by the
        next layer.
    weight : float, optional
        Strength lambda on the paper's scale; default 100 for EWA, 50 for SWA and SSWA (the paper's
        supplement, for a 7x7 map).
    scale_weight : bool
        Multiply ``weight`` by ``h * w / 49`` for an ``h x w`` matching map (default), so that the
        paper's weight means the same at any map size; ``False`` multiplies the loss by ``weight``
        as it is.
    drop : float, optional
        SSWA only: fraction of teacher channels left out per batch (``floor(K * drop)``
        channels); default 0.3.
    seed : int
        Seed of the SSWA channel draws (one ``torch.Generator``; every process of a distributed
        run must use the same seed and so draws the same channels).
    resize : bool
        If the maps differ in spatial size, resize the student's map (bilinear) to the teacher's
        instead of raising.

    Notes
    -----
    ``alpha`` is computed with one backward of the target logits, which equals the per-image
    gradient when the layers after the matching layer treat images independently (true for the
    VGG and ResNet heads).  In train mode the student's dropout enters ``alpha``, as in the paper's
    implementation.

    Examples
    --------
    >>> from apkit import models
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> teacher = models.create("vgg_small", num_classes=3).eval()
    >>> student = models.create("vgg_small", num_classes=3, width_divisor=2)
    >>> reg = AttributionMatchingLoss("swa")
    >>> x = torch.randn(2, 3, 64, 64)
    >>> t = reg.teacher_pass(teacher, x)
    >>> logits, student_map = reg.student_pass(student, x, t.target)
    >>> loss = reg(student_map, t.map)
    >>> loss.backward()
    >>> student.features[0].weight.grad is not None, teacher.features[0].weight.grad is None
    (True, True)
    """

    def __init__(
        self,
        regularizer: str = "swa",
        *,
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        weight: float | None = None,
        drop: float | None = None,
        seed: int = 0,
        resize: bool = False,
        scale_weight: bool = True,
    ):
        super().__init__()
        self.regularizer = check_choice(regularizer, "regularizer", REGULARIZER_NAMES)
        self.scale_weight = bool(scale_weight)
        for name, layer in (("teacher_layer", teacher_layer), ("student_layer", student_layer)):
            if layer is not None and not isinstance(layer, str):
                raise ValidationError(f"{name} must be a dotted module name such as 'features.43', got {layer!r}")
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.weight = PAPER_WEIGHTS[regularizer] if weight is None else check_float(weight, "weight", minimum=0.0)
        if regularizer == "sswa":
            self.drop = PAPER_DROP if drop is None else check_fraction(drop, "drop")
        elif drop is not None:
            raise ValidationError(f"drop applies only to regularizer='sswa', got drop={drop!r} with "
                                  f"regularizer={regularizer!r}")
        else:
            self.drop = 0.0
        self.seed = check_int(seed, "seed", minimum=0)
        self.resize = bool(resize)
        self._generator = torch.Generator().manual_seed(self.seed)

    def extra_repr(self) -> str:
        drop = f", drop={self.drop}" if self.regularizer == "sswa" else ""
        scaled = "" if self.scale_weight else ", scale_weight=False"
        return f"regularizer={self.regularizer!r}, weight={self.weight}{drop}{scaled}"

    def effective_weight(self, height: int, width: int) -> float:
        """The multiplier of the matching distance for an ``height x width`` map."""
        return scaled_weight(self.weight, height=height, width=width) if self.scale_weight else self.weight

    @property
    def needs_gradients(self) -> bool:
        """SWA and SSWA maps need the gradient of the target logit; EWA maps do not."""
        return self.regularizer != "ewa"

    def reset_generator(self, seed: int | None = None) -> None:
        """Restart the SSWA channel draws (from ``seed``, default the constructor's)."""
        self._generator.manual_seed(self.seed if seed is None else check_int(seed, "seed", minimum=0))

    def draw_dropped(self, channels: int) -> torch.Tensor:
        """Draw the ``floor(channels * drop)`` teacher channels SSWA leaves out of this batch."""
        count = math.floor(channels * self.drop + 1e-9)  # guard against 0.3 * 10 = 2.9999...
        return torch.randperm(channels, generator=self._generator)[:count].sort().values

    def teacher_pass(
        self, teacher: nn.Module, images: torch.Tensor, *, target: torch.Tensor | None = None
    ) -> TeacherPass:
        """One teacher forward: logits, target class (default: top-1) and the detached teacher map."""
        return self.teacher_map(self.teacher_evidence(teacher, images, target=target))

    def teacher_evidence(
        self, teacher: nn.Module, images: torch.Tensor, *, target: torch.Tensor | None = None
    ) -> TeacherEvidence:
        """The teacher's logits, target class (default: top-1), matching-layer activations and channel weights."""
        check_tensor(images, "images", ndim=4, floating=True)
        layer = self.teacher_layer or default_layer(unwrap(teacher), "matching")
        with evaluating(teacher):
            if self.regularizer == "ewa":
                with torch.no_grad():
                    logits, activations = _forward_with_map(teacher, layer, images)
                chosen = logits.argmax(1) if target is None else _check_target(target, logits)
                return TeacherEvidence(logits.detach(), chosen, activations.detach())
            logits, activations = _teacher_head_graph(teacher, layer, images)
            chosen = logits.argmax(1) if target is None else _check_target(target, logits)
            alpha, _ = channel_weights(activations, logits, chosen, reduce="sum")  # the paper's sum over positions
        return TeacherEvidence(logits.detach(), chosen, activations.detach(), alpha.detach())

    def teacher_map(self, evidence: TeacherEvidence) -> TeacherPass:
        """The teacher's map of one batch from its evidence; SSWA draws the channels it leaves out here."""
        if self.regularizer == "ewa":
            return TeacherPass(evidence.logits, evidence.target, ewa_map(evidence.activations))
        alpha, dropped = evidence.alpha, None
        if self.regularizer == "sswa":
            channels = alpha.shape[1]
            dropped = self.draw_dropped(channels).to(alpha.device)
            keep = torch.ones(channels, device=alpha.device, dtype=alpha.dtype)
            keep[dropped] = 0
            alpha = alpha * keep
        return TeacherPass(evidence.logits, evidence.target, class_activation_map(alpha, evidence.activations),
                           dropped)

    def student_pass(
        self, student: nn.Module, images: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Student forward: ``(logits, map)``, the map differentiable w.r.t. the student's weights.

        For SWA/SSWA the map is Grad-CAM's with ``create_graph=True`` (when grad mode is on), so a
        loss on it back-propagates through the channel weights too.  The logits are the ones to use
        for the task or distillation loss: one student forward serves both.
        """
        check_tensor(images, "images", ndim=4, floating=True)
        layer = self.student_layer or default_layer(unwrap(student), "matching")
        train_graph = torch.is_grad_enabled()
        with torch.enable_grad() if self.needs_gradients else contextlib.nullcontext():
            logits, activations = _forward_with_map(student, layer, images)
            if self.regularizer == "ewa":
                return logits, ewa_map(activations)
            target = _check_target(target, logits)
            alpha, _ = channel_weights(activations, logits, target, create_graph=train_graph, reduce="sum")
            student_map = class_activation_map(alpha, activations)
        return logits, student_map

    def forward(self, student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
        """``effective_weight * matching_distance(student_map, teacher_map)`` (resizing first if allowed)."""
        check_tensor(student_map, "student_map", ndim=3, floating=True)
        check_tensor(teacher_map, "teacher_map", ndim=3, floating=True)
        if student_map.shape[-2:] != teacher_map.shape[-2:]:
            if not self.resize:
                raise ValidationError(
                    f"the student's map is {tuple(student_map.shape[-2:])} but the teacher's is "
                    f"{tuple(teacher_map.shape[-2:])}; choose matching layers of the same spatial size "
                    "or pass resize=True"
                )
            student_map = F.interpolate(
                student_map[:, None], size=teacher_map.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
        weight = self.effective_weight(*teacher_map.shape[-2:])
        return weight * matching_distance(student_map, teacher_map.to(student_map.dtype))
