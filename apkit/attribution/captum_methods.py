"""Any Captum attribution class as an apkit method: ``"captum:IntegratedGradients"``, ``"saliency"``, ...

The adapter gives Captum's methods apkit's behaviour: layers by dotted name, (image, class)
pairs expanded into the batch dimension in chunks (one Captum call per chunk, never one per
class), eval mode with the model restored afterwards, and heatmaps summed over channels and
upsampled to the input size.  Options are passed to the Captum method's ``attribute``.
"""

from __future__ import annotations

import inspect

import captum.attr
import torch
from captum.attr import (
    Attribution,
    GradientAttribution,
    LayerAttribution,
    NeuronAttribution,
    PerturbationAttribution,
)

from apkit.attribution import postprocess
from apkit.attribution.base import Method, check_classes
from apkit.core.errors import ValidationError, unknown_name
from apkit.core.modules import get_layer

# Short names for the Captum methods used most with image classifiers.
SHORT_NAMES = {
    "integrated_gradients": "IntegratedGradients",
    "saliency": "Saliency",
    "input_x_gradient": "InputXGradient",
    "guided_backprop": "GuidedBackprop",
    "guided_gradcam": "GuidedGradCam",
}
_ABSTRACT = {"Attribution", "GradientAttribution", "PerturbationAttribution", "LayerAttribution", "LimeBase"}


class CaptumMethod(Method):
    """Adapter base: subclasses set ``captum_class`` (see :func:`captum_method`)."""

    captum_class: type = Attribution

    def _options(self):
        return None  # passed through to Captum, which checks them

    def _attribute(self, inputs, pairs, **options):
        with torch.no_grad():  # one plain forward of the chunk's images checks the classes
            logits = self.model(inputs)
        check_classes(pairs, logits.shape[1])
        arguments = [self.model]
        if self.is_layer_method:
            arguments.append(get_layer(self.model, self.layer))
        method = self.captum_class(*arguments)
        # A gradient-ready copy of the rows (Captum warns when it has to switch gradients on itself).
        rows = inputs[pairs[:, 0]].detach().requires_grad_()
        attributions = method.attribute(rows, target=pairs[:, 1].tolist(), **options)
        if isinstance(attributions, tuple):
            attributions = attributions[0]
        return attributions.detach(), logits[pairs[:, 0], pairs[:, 1]]

    def _to_heatmap(self, attributions, logits, size):
        if attributions.dim() != 4:
            raise ValidationError(
                f"{self.name} returned attributions of shape {tuple(attributions.shape)}; a heatmap needs "
                "(M, C, h, w) - choose a layer with a spatial output"
            )
        return postprocess.to_input_resolution(postprocess.sum_channels(attributions), size)


def captum_method(name: str) -> type[CaptumMethod]:
    """The apkit method class wrapping ``captum.attr.<name>``.

    Examples
    --------
    >>> captum_method("IntegratedGradients").name
    'captum:IntegratedGradients'
    """
    cls = getattr(captum.attr, name, None) if name in captum_names() else None
    if cls is None:
        raise unknown_name(name, "Captum method", captum_names())
    takes_layer = "layer" in inspect.signature(cls.__init__).parameters
    doc = (cls.__doc__ or "").strip().splitlines()
    return type(
        f"Captum{name}",
        (CaptumMethod,),
        {
            "captum_class": cls,
            "name": f"captum:{name}",
            "is_layer_method": takes_layer,
            "accepts_layer": takes_layer,
            "__doc__": f"Captum's {name} through apkit's adapter. {doc[0] if doc else ''}".strip(),
        },
    )


def captum_names() -> list[str]:
    """Captum attribution classes usable with (model[, layer]) alone: no neuron methods, no wrappers."""
    names = []
    for name in sorted(captum.attr.__all__):
        cls = getattr(captum.attr, name)
        if not inspect.isclass(cls) or name in _ABSTRACT or "LLM" in name:
            continue
        if not issubclass(cls, (GradientAttribution, PerturbationAttribution, LayerAttribution)):
            continue
        if issubclass(cls, NeuronAttribution):
            continue
        parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]
        if any(p.default is inspect.Parameter.empty and p.name != "layer" for p in parameters
               if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)):
            continue
        names.append(name)
    return names


__all__ = ["SHORT_NAMES", "CaptumMethod", "captum_method", "captum_names"]
