"""Default layers per architecture: where attribution maps are taken and where attribution is matched.

Layers are addressed by dotted name (:func:`apkit.models.get_layer`), so one setting serves a
teacher and its pruned or narrower student.
"""

from __future__ import annotations

from torch import nn

from apkit._validation import check_choice
from apkit.errors import ValidationError
from apkit.names import LAYER_KIND_NAMES


def default_layer(model: nn.Module, kind: str = "attribution") -> str:
    """The layer apkit uses by default for ``kind`` ("attribution" or "matching").

    Models built by :func:`apkit.models.create` carry ``attribution_layer`` and
    ``matching_layer`` attributes.  For any other CNN the output of the last ReLU (or, if there
    is none, the last convolution) is used.
    """
    check_choice(kind, "layer kind", LAYER_KIND_NAMES)
    named = getattr(model, f"{kind}_layer", None)
    if isinstance(named, str):
        return named
    candidates = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    candidates = candidates or [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not candidates:
        raise ValidationError(
            f"cannot choose a default {kind} layer for {type(model).__name__}: it has no ReLU or Conv2d; "
            "pass layer='<dotted module name>'"
        )
    return candidates[-1]
