"""Excitation Backprop against zennit and the closed form at the paper's layer."""

import pytest
import torch
import torch.nn.functional as F
from helpers import relative_error
from zennit.attribution import Gradient
from zennit.composites import ExcitationBackprop as ZennitExcitationBackprop
from zennit.torchvision import ResNetCanonizer

from apkit.attribution import ExcitationBackprop
from apkit.core.modules import get_layer

STABILIZER = 1e-12  # zennit adds it to denominators; apkit divides exactly (0 where 0)


pytestmark = pytest.mark.usefixtures("one_thread")


def zennit_excitation(model, x, classes, layer, canonizer):
    """Zennit's excitation backprop, read at ``layer`` (the gradient there is the winning probability)."""
    store = {}

    def hook(_module, _inputs, output):
        output.register_hook(lambda grad: store.setdefault("p", grad))

    handle = get_layer(model, layer).register_forward_hook(hook)
    try:
        composite = ZennitExcitationBackprop(stabilizer=STABILIZER, zero_params="bias",
                                             canonizers=[canonizer()] if canonizer else [])
        with Gradient(model, composite) as attributor:
            attributor(x.clone().requires_grad_(), F.one_hot(classes, 10).float())
    finally:
        handle.remove()
    return store["p"].sum(1, keepdim=True)


@pytest.mark.parametrize("arch,canonizer,layers", [
    ("vgg16_merged", None, ["features.42", "features.32"]),
    ("resnet18", ResNetCanonizer, ["layer4", "layer3"]),
])
def test_excitation_backprop_equals_zennit(arch, canonizer, layers, request):
    model = request.getfixturevalue(arch)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)).relu()
    classes = torch.tensor([3, 8])
    for layer in layers:
        ours = ExcitationBackprop(model, layer).attribute(x, classes)
        reference = zennit_excitation(model, x, classes, layer, canonizer)
        assert relative_error(ours, reference) < 1e-4, layer
        # A marginal winning probability: it sums to one when it reaches the layer whole.
        torch.testing.assert_close(ours.sum((1, 2, 3)), torch.ones(2), rtol=1e-4, atol=1e-4)


def test_excitation_backprop_closed_form_at_the_paper_layer(vgg16):
    """Paper layer (ReLU before the last max-pool): MWP over the pooled features, routed to the arg-max."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    classes = torch.tensor([2, 5])
    with torch.no_grad():
        a = vgg16.features[:43](x)
        pooled, where = F.max_pool2d(a, 2, return_indices=True)
        w = vgg16.classifier[1].weight[classes].view(2, *pooled.shape[1:])

    def routed(weights):
        p = pooled * weights
        p = p / p.sum((1, 2, 3), keepdim=True)
        return torch.zeros_like(a).flatten(2).scatter_(2, where.flatten(2), p.flatten(2)).view_as(a).sum(1)

    plain = ExcitationBackprop(vgg16, "features.42").attribute(x, classes)[:, 0]
    torch.testing.assert_close(plain, routed(w.clamp(min=0)), rtol=1e-4, atol=1e-7)
    contrastive = ExcitationBackprop(vgg16).attribute(x, classes, contrastive=True)[:, 0]
    torch.testing.assert_close(contrastive, routed(w.clamp(min=0)) - routed((-w).clamp(min=0)), rtol=1e-4, atol=1e-7)
    heatmap = ExcitationBackprop(vgg16).heatmap(x, classes, contrastive=True)
    assert heatmap.shape == (2, 64, 64) and float(heatmap.min()) >= 0.0
