"""The layers where attribution is matched during compression, and how coarse their maps are.

By default both models match at the audit's default layer (:func:`apkit.models.default_layer`)
probed at the training images' size, so that what is trained is what is audited.  A map smaller
than 4x4 (e.g. ResNet's ``layer4`` at 64 px: 2x2) carries little spatial information: it is
matched all the same, with a warning that names a finer layer to pass instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from apkit.core.modules import unwrap
from apkit.models import default_layer, spatial_layers
from apkit.models.layers import MIN_MAP_SIDE, map_size

__all__ = ["TwiceDifferentiableHardsigmoid", "coarse_map_warning", "make_twice_differentiable", "matching_layers"]


class TwiceDifferentiableHardsigmoid(nn.Hardsigmoid):
    """``nn.Hardsigmoid`` computed as ``relu6(x + 3) / 6``: the same values, and a second derivative.

    SWA and SSWA train through the gradient of the student's logits (a double backward), which
    PyTorch's own hardsigmoid kernel does not provide (MobileNetV3's squeeze-excitation uses it).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(x + 3.0) / 6.0


def make_twice_differentiable(model: nn.Module) -> int:
    """Swap every ``nn.Hardsigmoid`` of ``model`` for :class:`TwiceDifferentiableHardsigmoid`; return how many.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Hardsigmoid())
    >>> make_twice_differentiable(net), type(net[1]).__name__
    (1, 'TwiceDifferentiableHardsigmoid')
    """
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Hardsigmoid:
                setattr(parent, name, TwiceDifferentiableHardsigmoid(inplace=child.inplace))
                swapped += 1
    return swapped


def _has_layer(model: nn.Module, name: str) -> bool:
    model = unwrap(model)
    if isinstance(model, torch.fx.GraphModule):  # a traced copy calls leaf modules: its blocks never run
        return any(node.op == "call_module" and node.target == name for node in model.graph.nodes)
    return name in dict(model.named_modules())


def coarse_map_warning(model: nn.Module, layer: str, size: tuple[int, int],
                       example_inputs: torch.Tensor) -> str | None:
    """A warning when ``size`` is smaller than 4x4 on a side, naming the last layer with a finer map."""
    if min(size) >= MIN_MAP_SIDE:
        return None
    finer = [(name, shape) for name, shape in spatial_layers(model, example_inputs).items()
             if min(shape[2], shape[3]) >= MIN_MAP_SIDE]
    hint = f"; e.g. {finer[-1][0]!r} has a {finer[-1][1][2]}x{finer[-1][1][3]} map" if finer else ""
    side = example_inputs.shape[-1]
    return (f"the matching map at {layer!r} is {size[0]}x{size[1]} at {side} px input, smaller than "
            f"{MIN_MAP_SIDE}x{MIN_MAP_SIDE}: attributions that coarse say little about where the model looks; "
            f"pass a layer with a larger map (--matching-layer NAME, matching_layer=...){hint}")


def _student_default(student: nn.Module, size: tuple[int, int], example_inputs: torch.Tensor) -> str:
    """The student's default layer, or, when its map is not the teacher's size, its last map of that size."""
    layer = default_layer(student, "matching", example_inputs)
    if map_size(student, layer, example_inputs) == size:
        return layer
    same = [name for name, shape in spatial_layers(student, example_inputs).items() if tuple(shape[2:]) == size]
    return same[-1] if same else layer


def matching_layers(teacher: nn.Module, student: nn.Module, example_inputs: torch.Tensor, *,
                    teacher_layer: str | None = None, student_layer: str | None = None) -> dict[str, Any]:
    """The matching layers of ``teacher`` and ``student`` and their map sizes at ``example_inputs``' size.

    ``teacher_layer`` defaults to the audit's default layer of the teacher; ``student_layer`` to
    ``teacher_layer`` when the student has a layer of that name (a pruned copy), else to the
    student's own default layer, or, if that map's size is not the teacher's, to the student's
    last layer whose map is (maps are compared position by position).  A map smaller than 4x4
    gives a ``UserWarning``.

    Returns
    -------
    dict
        ``teacher``, ``student`` (names), ``teacher_map``, ``student_map`` (``[h, w]``) and
        ``warnings`` (their texts), what ``record.json`` records as ``layers``.

    Examples
    --------
    >>> from torchvision.models import resnet18
    >>> net = resnet18(weights=None, num_classes=3)
    >>> layers = matching_layers(net, net, torch.zeros(1, 3, 128, 128))
    >>> layers["teacher"], layers["student_map"], layers["warnings"]
    ('layer4', [4, 4], [])
    """
    teacher_layer = teacher_layer or default_layer(unwrap(teacher), "matching", example_inputs)
    teacher_size = map_size(unwrap(teacher), teacher_layer, example_inputs)
    if student_layer is None:
        student_layer = teacher_layer if _has_layer(student, teacher_layer) else \
            _student_default(unwrap(student), teacher_size, example_inputs)
    layers: dict[str, Any] = {"teacher": teacher_layer, "student": student_layer, "warnings": []}
    for role, model in (("teacher", teacher), ("student", student)):
        size = teacher_size if role == "teacher" else map_size(unwrap(model), layers[role], example_inputs)
        layers[f"{role}_map"] = list(size)
        message = coarse_map_warning(unwrap(model), layers[role], size, example_inputs)
        if message is not None and message not in layers["warnings"]:
            layers["warnings"].append(message)
    for message in layers["warnings"]:
        warnings.warn(message, UserWarning, stacklevel=2)
    return layers
