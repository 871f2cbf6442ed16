"""apkit.explain: registry, batching over (image, class) pairs, targets, errors, and the model guard."""

import pytest
import torch
from torch import nn

import apkit
from apkit import models
from apkit.attribution import ATTRIBUTION_METHODS, explain
from apkit.core.errors import ApkitError, UnknownNameError, ValidationError

RULE_AND_LAYER_METHODS = ["gradcam", "excitation", "lrp", "rap"]
CAPTUM_METHODS = [("saliency", {}), ("integrated_gradients", {"n_steps": 4}), ("guided_gradcam", {}),
                  ("captum:LayerGradCam", {})]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_lists_the_paper_methods_and_captum():
    names = ATTRIBUTION_METHODS.names()
    for name in ["gradcam", "excitation", "lrp", "rap", "integrated_gradients", "saliency", "guided_gradcam",
                 "captum:IntegratedGradients", "captum:LayerGradCam", "captum:Occlusion"]:
        assert name in names
    assert not any(name.startswith("captum:Neuron") for name in names)
    assert apkit.explain is explain


@pytest.mark.parametrize("method,options", [(m, {}) for m in RULE_AND_LAYER_METHODS] + CAPTUM_METHODS)
def test_batched_equals_per_pair(tiny, method, options):
    """8 images x 20 classes in one call (chunked) equal 160 separate (image, class) calls."""
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pairs = torch.cartesian_prod(torch.arange(8), torch.arange(20))
    pairs = pairs[torch.randperm(len(pairs), generator=torch.Generator().manual_seed(2))]  # any order
    batched = explain(tiny, x, pairs, method=method, batch_size=48, **options)
    single = torch.stack([
        explain(tiny, x[i:i + 1], torch.tensor([c]), method=method, **options)[0] for i, c in pairs.tolist()
    ])
    assert batched.shape == (160, 16, 16)
    scale = single.abs().amax((1, 2), keepdim=True)  # each map to 1e-5 of its own largest value
    assert bool(((batched - single).abs() <= 1e-5 * scale).all())
    assert int((scale > 0).sum()) > 100  # most maps are not trivially empty


@pytest.mark.parametrize("method", ["excitation", "lrp", "rap"])
def test_cpu_walk_in_small_groups_equals_one_walk(tiny, method, monkeypatch):
    """The CPU's grouped backward walk (groups cut inside and between images) changes no value."""
    from apkit.attribution import _graph

    x = torch.randn(5, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    pairs = torch.cartesian_prod(torch.arange(5), torch.arange(7))
    whole = explain(tiny, x, pairs, method=method, batch_size=35)  # one chunk
    widest = 8 * 16 * 16  # the tiny VGG's widest per-image tensor: 8 channels at full resolution
    monkeypatch.setattr(_graph, "_CPU_GROUP_ELEMENTS", 3 * widest)  # groups of 3 pairs: 7 = 3 + 3 + 1
    walks = []
    backward = _graph.Plan.backward
    monkeypatch.setattr(_graph.Plan, "backward", lambda plan, env, local, rules: walks.append(len(local))
                        or backward(plan, env, local, rules))
    grouped = explain(tiny, x, pairs, method=method, batch_size=35)
    assert walks == [3, 3, 1] * 5  # 7 pairs per image: groups cut inside each image and between images
    torch.testing.assert_close(grouped, whole, rtol=1e-12, atol=1e-12)


def test_one_class_per_image_and_int_targets(tiny):
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    per_image = explain(tiny, x, torch.tensor([4, 4, 4]), method="lrp")
    torch.testing.assert_close(explain(tiny, x, 4, method="lrp"), per_image)
    torch.testing.assert_close(explain(tiny, x, torch.tensor([[0, 4], [1, 4], [2, 4]]), method="lrp"), per_image)


# -- errors ------------------------------------------------------------------------------------------

def test_unknown_method_and_layer_list_the_valid_names(tiny):
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(UnknownNameError, match="gradcam.*excitation.*lrp.*rap"):
        explain(tiny, x, 0, method="gradcan")
    for method in ["gradcam", "excitation", "lrp", "captum:LayerGradCam"]:
        with pytest.raises(UnknownNameError, match="features.6"):
            explain(tiny, x, 0, method=method, layer="features.99")
    with pytest.raises(ValidationError, match="takes no layer"):
        explain(tiny, x, 0, method="saliency", layer="features.6")


@pytest.mark.parametrize("method", RULE_AND_LAYER_METHODS + ["saliency", "guided_gradcam"])
def test_bad_targets_and_inputs_raise_apkit_errors(tiny, method):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(ValidationError, match="out of range.*20 outputs"):
        explain(tiny, x, torch.tensor([1, 20]), method=method)
    with pytest.raises(ValidationError, match="image indices"):
        explain(tiny, x, torch.tensor([[0, 1], [2, 1]]), method=method)
    with pytest.raises(ValidationError, match=">= 0"):
        explain(tiny, x, torch.tensor([[0, -1]]), method=method)
    with pytest.raises(ValidationError, match="one class per image"):
        explain(tiny, x, torch.tensor([1, 2, 3]), method=method)
    with pytest.raises(ValidationError, match="integer"):
        explain(tiny, x, torch.tensor([1.0, 2.0]), method=method)
    with pytest.raises(ValidationError, match="rank 4"):
        explain(tiny, x[0, 0], torch.tensor([1]), method=method)  # neither a batch nor one (C, H, W) image
    with pytest.raises(ValidationError, match="batch_size"):
        explain(tiny, x, 1, method=method, batch_size=0)


def test_bad_options_raise_apkit_errors(tiny):
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(ValidationError, match="does not take option.*colour.*contrastive"):
        explain(tiny, x, 0, method="excitation", colour=True)
    with pytest.raises(UnknownNameError, match="mean, sum"):
        explain(tiny, x, 0, method="gradcam", reduce="max")
    with pytest.raises(UnknownNameError, match="zbox, same"):
        explain(tiny, x, 0, method="lrp", first_layer="flat")
    with pytest.raises(ValidationError, match="bounds"):
        explain(tiny, x, 0, method="rap", bounds=(0.0, 1.0, 2.0))


def test_unsupported_layers_are_named():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.head = nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.act(self.conv(x)).mean((2, 3)))

    with pytest.raises(ValidationError, match="Tanh.*supported: Conv2d"):
        explain(Scaled(), torch.randn(1, 3, 8, 8), 0, method="lrp")


# -- the model is left exactly as it was ----------------------------------------------------------------

def snapshot(model):
    return {
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
             len(m._backward_pre_hooks), len(m._forward_hooks_with_kwargs))
            for m in model.modules()
        ],
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grads"])
    assert after["hooks"] == before["hooks"] and all(h == (0, 0, 0, 0, 0) for h in after["hooks"])
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key


class Boom(nn.Module):
    """A ReLU that raises while armed (during a forward pass, after hooks have been set)."""

    armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("boom")
        return torch.relu(x)


@pytest.fixture
def guarded():
    torch.manual_seed(3)
    model = models.create("vgg_small", num_classes=5, input_size=32)
    model.features[20] = Boom()
    model.train()
    model.features[1].eval()  # mixed modes must come back as they were
    model.features[0].weight.requires_grad_(False)
    return model


@pytest.mark.parametrize("method", RULE_AND_LAYER_METHODS + ["saliency", "guided_gradcam", "captum:LayerGradCam"])
def test_model_is_left_unchanged(guarded, method):
    x = torch.randn(2, 3, 32, 32)
    before = snapshot(guarded)
    layer = None if method == "saliency" else "features.20"
    maps = explain(guarded, x, torch.tensor([[0, 1], [1, 3]]), method=method, layer=layer)
    assert maps.shape == (2, 32, 32) and bool(torch.isfinite(maps).all())
    assert_unchanged(guarded, before)


@pytest.mark.parametrize("method", RULE_AND_LAYER_METHODS + ["saliency", "guided_gradcam", "captum:LayerGradCam"])
def test_model_is_left_unchanged_when_forward_raises(guarded, method):
    before = snapshot(guarded)
    Boom.armed = True
    try:
        with pytest.raises((RuntimeError, ApkitError)):
            explain(guarded, torch.randn(2, 3, 32, 32), 1, method=method,
                    layer=None if method == "saliency" else "features.20")
    finally:
        Boom.armed = False
    assert_unchanged(guarded, before)


def test_inputs_of_the_wrong_channels_and_non_spatial_layers_get_clear_errors():
    net = models.create("vgg_small", num_classes=8)
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValidationError, match=r"inputs have 1 channel\(s\) but the model's first convolution "
                                              r"\('features.0'\) takes 3"):
        explain(net, x[:, :1], torch.tensor([0, 1]))
    for method in ("lrp", "rap"):
        with pytest.raises(ValidationError, match="not a spatial .* map.*pass a convolutional layer"):
            explain(net, x, torch.tensor([0, 1]), method=method, layer="classifier.1")


def test_single_image_top1_default_and_layer_as_module():
    """A (C, H, W) image gives one (H, W) map, for the model's top-1 class by default; a layer may be a module."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(weights=None, num_classes=5).eval()
    image = torch.randn(3, 48, 48)
    top1 = int(net(image[None]).argmax())
    by_default = explain(net, image, layer=net.layer3)
    assert by_default.shape == (48, 48)
    reference = explain(net, image[None], torch.tensor([top1]), layer="layer3")[0]
    assert torch.equal(by_default, reference)
    several = explain(net, image, [top1, (top1 + 1) % 5], layer="layer3")
    assert several.shape == (2, 48, 48) and torch.equal(several[0], reference)
    batch_default = explain(net, torch.stack([image, -image]), layer=net.layer3)
    assert torch.allclose(batch_default[0], reference, atol=1e-5)  # batched: the same up to rounding
    assert not net.training  # eval mode, as it was given
    with pytest.raises(ValidationError, match="not a submodule"):
        explain(net, image, layer=nn.Conv2d(3, 3, 1))
