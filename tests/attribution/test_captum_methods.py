"""The Captum adapter: its maps equal the Captum method called directly; which classes it offers and how."""

import pytest
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

from apkit.attribution import captum_method, captum_names, explain
from apkit.attribution.captum_methods import SHORT_NAMES
from apkit.core.errors import UnknownNameError
from apkit.core.modules import get_layer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_captum_adapter_equals_captum(tiny):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    pairs = torch.tensor([[0, 3], [1, 3], [1, 11]])
    ours = explain(tiny, x, pairs, method="captum:IntegratedGradients", n_steps=8)
    reference = IntegratedGradients(tiny).attribute(x[pairs[:, 0]], target=pairs[:, 1].tolist(), n_steps=8)
    torch.testing.assert_close(ours, reference.sum(1).detach())


def test_short_name_equals_captum_saliency(tiny):
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    pairs = torch.tensor([[0, 1], [2, 5], [2, 0]])
    ours = explain(tiny, x, pairs, method="saliency")
    rows = x[pairs[:, 0]].clone().requires_grad_()
    reference = Saliency(tiny).attribute(rows, target=pairs[:, 1].tolist())  # |gradient| per channel
    torch.testing.assert_close(ours, reference.sum(1).detach())


def test_layer_method_equals_captum_upsampled(tiny):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    pairs = torch.tensor([[0, 2], [1, 7]])
    ours = explain(tiny, x, pairs, method="captum:LayerGradCam", layer="features.6")
    gradcam = LayerGradCam(tiny, get_layer(tiny, "features.6"))
    raw = gradcam.attribute(x[pairs[:, 0]].clone().requires_grad_(), target=pairs[:, 1].tolist())
    reference = LayerAttribution.interpolate(raw, (16, 16), "bilinear")[:, 0].detach()
    torch.testing.assert_close(ours, reference)


def test_captum_method_classes_and_names():
    integrated = captum_method("IntegratedGradients")
    assert integrated.name == "captum:IntegratedGradients" and integrated.captum_class is IntegratedGradients
    assert not integrated.is_layer_method and not integrated.accepts_layer
    layer_gradcam = captum_method("LayerGradCam")
    assert layer_gradcam.is_layer_method and layer_gradcam.accepts_layer
    names = captum_names()
    assert set(SHORT_NAMES.values()) <= set(names)
    assert "Attribution" not in names and "GradientAttribution" not in names  # abstract bases
    assert not any(name.startswith("Neuron") for name in names)  # they need a neuron index
    assert "NoiseTunnel" not in names  # it wraps another method: (model[, layer]) alone cannot build it


def test_unknown_captum_method_suggests_close_names():
    with pytest.raises(UnknownNameError, match="unknown Captum method 'IntegratedGradient'; did you mean "
                                               "IntegratedGradients"):
        captum_method("IntegratedGradient")
