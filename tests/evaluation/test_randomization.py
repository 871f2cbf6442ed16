"""The cascading randomisation test: Quantus's MPRT and a per-image SciPy reference as oracles, and the sanity check
itself on a trained tiny CNN (Grad-CAM and LRP lose similarity, an edge filter keeps it)."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TinyImages, calibrate_batchnorm
from scipy.stats import spearmanr
from torch import nn

import apkit
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.evaluation.randomization import (
    RandomizationResult,
    randomizable_layers,
    randomization_test,
    spearman_rows,
)
from apkit.models import default_layer

SEED = 3


def _net(num_classes=3):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )


def _random_net():
    torch.manual_seed(0)
    return calibrate_batchnorm(_net(), size=16).eval()


def _images(n=5, size=16, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _same_state(a: nn.Module, b: dict) -> bool:
    return all(torch.equal(b[k], v) for k, v in a.state_dict().items()) and a.state_dict().keys() == b.keys()


def sobel_magnitude(model, inputs, target):
    """A control "attribution" that ignores the model: the edge strength of the image."""
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gray = inputs.mean(dim=1, keepdim=True)
    dx = F.conv2d(gray, kernel.view(1, 1, 3, 3), padding=1)
    dy = F.conv2d(gray, kernel.t().reshape(1, 1, 3, 3), padding=1)
    return torch.sqrt(dx ** 2 + dy ** 2)[:, 0]


# ------------------------------------------------------------------------------------------- the pieces


def test_layers_are_those_with_reset_parameters_top_first():
    assert randomizable_layers(_net()) == ["9", "5", "4", "1", "0"]


def test_spearman_rows_equals_scipy_with_ties():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 40), generator=gen).float()  # many ties
    b = torch.randn(6, 40, generator=gen).clamp(min=0)  # ties at 0
    expected = [spearmanr(a[i].numpy(), b[i].numpy())[0] for i in range(6)]
    assert np.allclose(spearman_rows(a, b).numpy(), expected, rtol=0, atol=1e-12)


def test_spearman_of_a_constant_row_is_nan_as_in_scipy():
    value = spearman_rows(torch.zeros(1, 5), torch.arange(5.0).view(1, 5))
    assert torch.isnan(value).all()


# ------------------------------------------------------------------------------------------- oracles


def _quantus_mprt(model, images, target, *, method, layer, absolute=True):
    quantus = pytest.importorskip("quantus")

    def explain_func(model, inputs, targets, **_):
        maps = apkit.explain(model, torch.as_tensor(inputs), torch.as_tensor(targets), method=method, layer=layer)
        return maps.detach().numpy()[:, None]

    metric = quantus.MPRT(layer_order="top_down", seed=SEED - 1, abs=absolute, normalise=True, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(model=copy.deepcopy(model), x_batch=images.numpy(), y_batch=target.numpy(), a_batch=None,
                        explain_func=explain_func, device="cpu", batch_size=len(images), channel_first=True)
    scores.pop("original")
    return scores


@pytest.mark.parametrize(("method", "layer", "absolute"), [("gradcam", "6", True), ("lrp", None, True),
                                                          ("captum:InputXGradient", None, False)])
def test_equal_to_quantus_mprt_with_the_same_seed(method, layer, absolute):
    # Quantus re-draws each layer under torch.manual_seed(seed + 1): its seed SEED - 1 is apkit's SEED.
    model, images, target = _random_net(), _images(), torch.tensor([0, 1, 2, 0, 1])
    options = {"layer": layer} if layer else {}
    ours = randomization_test(model, images, target, method=method, seed=SEED, absolute=absolute,
                              explain_options=options)
    theirs = _quantus_mprt(model, images, target, method=method, layer=layer, absolute=absolute)
    assert list(theirs) == list(ours.layers)
    expected = np.array([theirs[name] for name in ours.layers])
    # Tolerance 1e-4: the same maps, but Quantus first divides them by their maximum in float32, which rounds a few
    # near-equal values to ties (measured: at most 3e-5 here); NaN where a randomised map is all zero, in both.
    assert np.allclose(ours.spearman_per_image.numpy(), expected, rtol=0, atol=1e-4, equal_nan=True)


def _cosine(a, b):
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return a @ b / norms if norms > 0 else 0.0  # an all-zero map is similar to nothing


def _reference(model, images, target, *, method, layer):
    """Adebayo et al.'s test image by image: randomise a copy by hand, SciPy's Spearman, a hand cosine."""
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())

    def one_map(net, i):
        found = apkit.explain(net, images[i:i + 1], target[i:i + 1], method=method, layer=layer)[0]
        return found.detach().abs().double().numpy().ravel()

    originals = [one_map(model, i) for i in range(len(images))]
    spearman, cosine = [], []
    for name in randomizable_layers(model):
        torch.manual_seed(SEED)
        with torch.no_grad():
            modules[name].reset_parameters()
        maps = [one_map(randomised, i) for i in range(len(images))]
        with warnings.catch_warnings():  # an all-zero Grad-CAM map has no rank correlation: NaN, as apkit gives
            warnings.simplefilter("ignore")
            spearman.append([spearmanr(o, m)[0] for o, m in zip(originals, maps)])
        cosine.append([_cosine(o, m) for o, m in zip(originals, maps)])
    return np.array(spearman), np.array(cosine)


@pytest.mark.parametrize(("method", "layer"), [("gradcam", "6"), ("lrp", None)])
def test_equal_to_a_per_image_reference(method, layer):
    model, images, target = _random_net(), _images(), torch.tensor([2, 1, 0, 0, 1])
    options = {"layer": layer} if layer else {}
    ours = randomization_test(model, images, target, method=method, seed=SEED, batch_size=2, explain_options=options)
    spearman, cosine = _reference(model, images, target, method=method, layer=layer)
    # Tolerances: a map of one image alone and inside a batch differ by float rounding, which can swap near-equal
    # pixels' ranks (measured: Spearman differs by at most 4e-5 here) -- 1e-4 for Spearman, 1e-5 for cosine.
    assert np.allclose(ours.spearman_per_image.numpy(), spearman, rtol=0, atol=1e-4, equal_nan=True)
    assert np.allclose(ours.cosine_per_image.numpy(), cosine, rtol=0, atol=1e-5)
    assert np.allclose(ours.spearman.numpy(), np.nanmean(spearman, axis=1), rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------- the sanity check


@pytest.fixture(scope="module")
def trained():
    """A tiny CNN that has learned TinyImages' bands (a few seconds on a CPU)."""
    data = TinyImages(n=96, num_classes=3, image_size=24, task="multiclass", seed=0)
    images, labels = data.tensors[0], data.tensors[1].argmax(dim=1)
    torch.manual_seed(0)
    model = _net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model.eval()
    assert (model(images).argmax(dim=1) == labels).float().mean() > 0.75  # chance: 1/3
    return model, images[:24], labels[:24]


# Measured on this model (mean Spearman, top layer randomised -> all randomised): Grad-CAM -0.04 -> -0.08 (its
# channel weights are the top layer's, so the first step already destroys it), LRP z+ 0.66 -> 0.39 (known to
# depend less on the top layers; Sixt et al., ICML 2020).  The control below stays at 1.
@pytest.mark.parametrize(("method", "options", "drop"), [("gradcam", {"layer": "6"}, 0.0), ("lrp", {}, 0.2)])
def test_maps_of_a_trained_model_lose_similarity_under_cascading_randomisation(trained, method, options, drop):
    model, images, labels = trained
    before = copy.deepcopy(model.state_dict())
    result = randomization_test(model, images, labels, method=method, seed=0, explain_options=options)
    assert _same_state(model, before)  # the test never touches the model it is given
    assert result.layers == tuple(randomizable_layers(model))
    assert result.spearman.max() < 0.8  # every step is far from the unchanged maps' 1
    assert result.spearman[-1] < 0.5  # fully randomised, little of the ranking is left
    assert result.spearman[-1] < result.spearman[0] - drop + 0.05
    assert result.cosine[-1] < 0.9


def test_a_control_that_ignores_the_model_keeps_its_maps(trained):
    model, images, labels = trained
    result = randomization_test(model, images, labels, method=sobel_magnitude, batch_size=10)  # chunks 10, 10, 4
    assert result.method == "sobel_magnitude"
    assert torch.allclose(result.spearman_per_image, torch.ones(5, len(images), dtype=torch.float64))
    assert torch.allclose(result.cosine_per_image, torch.ones(5, len(images), dtype=torch.float64))


# ------------------------------------------------------------------------------------------- behaviour


def test_the_model_and_the_random_state_are_left_alone():
    model, images = _random_net(), _images(3)
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    randomization_test(model, images, 0, layers=["9", "5"], explain_options={"layer": "6"})
    assert torch.equal(torch.rand(3), expected_next)
    assert _same_state(model, before)


def test_the_result_is_deterministic_and_the_seed_matters():
    model, images = _random_net(), _images(3)
    first = randomization_test(model, images, 1, seed=0, explain_options={"layer": "6"})
    again = randomization_test(model, images, 1, seed=0, explain_options={"layer": "6"})
    other = randomization_test(model, images, 1, seed=1, explain_options={"layer": "6"})
    assert torch.equal(first.spearman_per_image, again.spearman_per_image)
    assert not torch.equal(first.spearman_per_image, other.spearman_per_image)


def test_signed_maps_can_be_compared():
    model, images = _random_net(), _images(3)
    method = "captum:InputXGradient"  # signed maps: about half of the pixels are negative
    signed = randomization_test(model, images, 1, method=method, layers=["9", "5"], absolute=False)
    absolute = randomization_test(model, images, 1, method=method, layers=["9", "5"])
    assert signed.absolute is False and signed.to_dict()["absolute"] is False
    assert not torch.allclose(signed.spearman, absolute.spearman)


def test_result_to_dict_is_plain_data():
    model, images = _random_net(), _images(2)
    result = randomization_test(model, images, 0, layers=["9", "4"], explain_options={"layer": "6"})
    assert isinstance(result, RandomizationResult)
    data = result.to_dict()
    assert data["layers"] == ["9", "4"]
    assert len(data["spearman"]) == 2 and len(data["cosine_per_image"][0]) == 2
    assert data["method"] == "gradcam" and data["layer"] == "6" and data["absolute"] is True


def test_a_layer_method_explains_the_default_layer_chosen_once():
    model, images = _random_net(), _images(2)
    result = randomization_test(model, images, 0, layers=["9"])
    assert result.layer == default_layer(model, "attribution", images[:1])
    assert randomization_test(model, images, 0, method="lrp", layers=["9"]).layer is None


def test_bad_input_is_refused_with_the_fix():
    model, images = _random_net(), _images(2)
    with pytest.raises(UnknownNameError, match="did you mean 4"):
        randomization_test(model, images, 0, layers=["44"])
    with pytest.raises(UnknownNameError, match="did you mean gradcam"):
        randomization_test(model, images, 0, method="gradcm")
    with pytest.raises(ValidationError, match="each layer once"):
        randomization_test(model, images, 0, layers=["9", "9"])
    with pytest.raises(ValidationError, match="list of dotted layer names"):
        randomization_test(model, images, 0, layers="9")
    with pytest.raises(ValidationError, match="one class per image"):
        randomization_test(model, images, torch.tensor([[0, 1], [0, 2], [1, 0]]))
    with pytest.raises(ValidationError, match=r"maps \(N, H, W\)"):
        randomization_test(model, images, 0, method=lambda m, x, t: x)
    with pytest.raises(ValidationError, match="inputs"):
        randomization_test(model, images[0], 0)
