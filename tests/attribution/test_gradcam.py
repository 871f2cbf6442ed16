"""Grad-CAM: equal to Captum's LayerGradCam, and its differentiable path equal in value and gradient."""

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

import apkit
from apkit import models
from apkit.attribution import GradCAM, grad_cam, grad_cam_from
from apkit.core.modules import capture_outputs, get_layer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vgg16():
    torch.manual_seed(0)
    return models.create("vgg16_bn", num_classes=10, input_size=64).eval()


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return models.create("resnet18", num_classes=10).eval()


PAIRS = torch.tensor([[0, 1], [0, 3], [1, 4], [2, 7], [2, 2], [2, 9]])


def captum_gradcam(model, x, pairs, layer):
    """Captum's LayerGradCam, one row per pair, upsampled bilinearly to the input size."""
    attribution = LayerGradCam(model, get_layer(model, layer)).attribute(
        x[pairs[:, 0]], target=pairs[:, 1].tolist(), relu_attributions=True
    )
    return LayerAttribution.interpolate(attribution, tuple(x.shape[-2:]), "bilinear").squeeze(1).detach()


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_gradcam_equals_captum_layergradcam(arch, request):
    model = request.getfixturevalue(arch)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    reference = captum_gradcam(model, x, PAIRS, model.attribution_layer)
    maps = apkit.explain(model, x, PAIRS, method="gradcam")
    assert maps.shape == (6, 64, 64) and not maps.requires_grad
    torch.testing.assert_close(maps, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    # The differentiable path gives the same values at layer resolution.
    layer_maps = grad_cam(model, x, PAIRS, create_graph=True)
    assert layer_maps.requires_grad
    expected = GradCAM(model).attribute(x, PAIRS)[:, 0]
    torch.testing.assert_close(layer_maps.detach(), expected, rtol=1e-5, atol=1e-9)


def test_reduce_sum_is_the_paper_alpha_and_scales_by_the_map_area(vgg16):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    mean = grad_cam(vgg16, x, torch.tensor([1, 2]))
    total = grad_cam(vgg16, x, torch.tensor([1, 2]), reduce="sum")
    torch.testing.assert_close(total, mean * mean.shape[-1] * mean.shape[-2])
    # Closed form for this head: alpha_k = sum over the 2x2 pooled map of the class's weights,
    # because max-pool backward sends each gradient to one location (METHOD §2.3).
    with torch.no_grad():
        a = vgg16.features[:43](x)
        w = vgg16.classifier[1].weight[[1, 2]].view(2, -1, 2, 2).sum((2, 3))
    torch.testing.assert_close(total, torch.relu(torch.einsum("nk,nkhw->nhw", w, a)), rtol=1e-4, atol=1e-6)


def test_differentiable_gradcam_has_the_reference_second_order_gradient():
    """Gradients of a loss on the maps equal those of a hand-written double back-prop (METHOD §2.6)."""
    torch.manual_seed(3)
    model = models.create("vgg_small", num_classes=5, input_size=32).double().train()
    model.classifier[0].p = 0.0  # dropout would make the two runs differ
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)  # float64: compare gradients, not rounding
    pairs = torch.tensor([[0, 1], [0, 4], [1, 2]])  # two classes of image 0: a batched product
    layer = model.matching_layer

    maps = grad_cam(model, x, pairs, layer, create_graph=True, reduce="sum")
    ours = torch.autograd.grad(maps.pow(2).sum(), list(model.parameters()), allow_unused=True)

    # The paper's code: one forward of the batch (BatchNorm in train mode sees the same batch), then
    # one backward per class.
    with capture_outputs(model, [layer]) as acts:
        logits = model(x)
    reference_maps = []
    for image, cls in pairs.tolist():
        (g,) = torch.autograd.grad(logits[image, cls], acts[layer], create_graph=True)
        reference_maps.append(torch.relu((g[image].sum((1, 2), keepdim=True) * acts[layer][image]).sum(0)))
    reference = torch.autograd.grad(torch.stack(reference_maps).pow(2).sum(), list(model.parameters()),
                                    allow_unused=True)
    assert sum(g is not None for g in ours) >= len(ours) - 1  # all but the unused head bias
    scale = max(float(b.abs().max()) for b in reference if b is not None)
    for a, b in zip(ours, reference):
        assert (a is None) == (b is None)
        if a is not None:  # (conv biases before train-mode BatchNorm have a zero gradient: absolute check)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9 * scale)
    assert model.training  # the function leaves the mode to the caller


def test_gradcam_from_an_existing_forward_and_a_frozen_model():
    torch.manual_seed(4)
    model = models.create("vgg_small", num_classes=5, input_size=32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(3, 3, 32, 32)
    maps = grad_cam(model, x, torch.tensor([0, 1, 2]))  # works without any gradient in the model
    with capture_outputs(model, [model.attribution_layer]) as acts:
        model.requires_grad_(True)
        logits = model(x)
    again = grad_cam_from(acts[model.attribution_layer], logits, torch.tensor([0, 1, 2]), retain_graph=True)
    torch.testing.assert_close(maps, again)
    logits.sum().backward()  # the forward graph was kept for the caller's own loss
    assert model.classifier[1].weight.grad is not None


def test_gradcam_on_a_shared_module_uses_its_last_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.relu, self.head = nn.ReLU(), nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.relu(self.conv2(self.relu(self.conv1(x)))).mean((2, 3)))

    torch.manual_seed(5)
    model = Twice().eval()
    x = torch.randn(2, 3, 8, 8)
    maps = GradCAM(model, "relu").attribute(x, torch.tensor([0, 2]))[:, 0]
    with torch.no_grad():
        a = model.relu(model.conv2(model.relu(model.conv1(x))))
    weights = model.head.weight[[0, 2]] / 64  # d logit / dA = w_c / (h*w)
    torch.testing.assert_close(maps, torch.relu(torch.einsum("nk,nkhw->nhw", weights, a)), rtol=1e-5, atol=1e-7)
