"""ROAR: the pixel removal by hand, and a very small remove-and-retrain run end to end with its cache."""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from apkit import models
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.data.synthetic import SyntheticShapes
from apkit.evaluation.roar import (
    DEFAULT_RECIPE,
    RemovedPixels,
    RoarResult,
    RoarSettings,
    dataset_identity,
    plot_roar,
    removal_rank,
    roar,
    roar_recipe,
)
from apkit.training import Recipe


def _base(n=3, size=4, task="multilabel"):
    data = TensorDataset(torch.arange(n * 3 * size * size, dtype=torch.float32).view(n, 3, size, size) + 100,
                         torch.ones(n, 2))
    data.mean, data.std = (0.2, 0.4, 0.6), (0.5, 0.5, 0.5)
    data.num_classes, data.task = 2, task
    return data


def test_removed_pixels_replace_the_top_fraction_with_the_mean():
    data = _base(n=1, size=3)
    maps = torch.tensor([[[0.0, 9.0, 1.0], [8.0, 2.0, 3.0], [4.0, 7.0, 5.0]]])  # all values distinct
    out = RemovedPixels(data, maps, 4 / 9)[0][0]
    removed = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=torch.bool)  # 9, 8, 7, 5
    assert torch.equal(out[:, removed], torch.zeros(3, 4))  # the mean is 0 once normalised
    assert torch.equal(out[:, ~removed], data[0][0][:, ~removed])
    # another fill colour, in pixel space, normalised with the dataset's statistics
    out = RemovedPixels(data, maps, 1 / 9, fill=(0.7, 0.4, 0.1))[0][0]
    assert out[:, 0, 1].tolist() == pytest.approx([1.0, 0.0, -1.0])
    assert torch.equal(RemovedPixels(data, maps, 0.0)[0][0], data[0][0])
    assert torch.equal(RemovedPixels(data, maps, 1.0)[0][0], torch.zeros(3, 3, 3))
    assert RemovedPixels(data, maps, 0.5).num_classes == 2  # attributes are forwarded


def test_removal_order_breaks_ties_at_random_but_reproducibly():
    maps = torch.zeros(2, 4, 4)
    maps[:, 0, 0] = 1.0  # one clear maximum, then 15 tied pixels
    rank = removal_rank(maps, 2, (4, 4), seed=0)
    assert rank[:, 0].tolist() == [0, 0]
    assert sorted(rank[0].tolist()) == list(range(16))
    assert not torch.equal(rank[0], rank[1])  # ties ordered differently per image
    assert torch.equal(rank, removal_rank(maps, 2, (4, 4), seed=0))
    assert not torch.equal(rank, removal_rank(maps, 2, (4, 4), seed=1))
    random = removal_rank(None, 2, (4, 4), seed=0)
    assert sorted(random[1].tolist()) == list(range(16))


def test_dataset_identity_is_stable_and_content_based():
    a, b = _base(), _base()
    assert dataset_identity(a) == dataset_identity(b)  # default reprs hold addresses: not used
    b.tensors[0][0, 0, 0, 0] += 1
    assert dataset_identity(a) != dataset_identity(b)
    assert dataset_identity(torch.utils.data.Subset(a, range(2))) != dataset_identity(a)


def test_roar_end_to_end_reuses_its_cache(tmp_path, one_thread):
    train = SyntheticShapes("train", num_samples=48, image_size=32)
    test = SyntheticShapes("val", num_samples=24, image_size=32)
    torch.manual_seed(0)
    source = models.create("vgg_small", num_classes=8, input_size=32, width_divisor=8)
    options = dict(classifier="vgg_small", classifier_options={"input_size": 32, "width_divisor": 8},
                   recipe=Recipe(epochs=1, batch_size=16, lr=0.05), cache_dir=tmp_path, device="cpu",
                   progress=False, metric="map_class")
    first = roar({"teacher": source, "random": None}, train, test, fractions=(0.2, 0.8), **options)
    assert first.settings["maps_computed"] == [("teacher", "train"), ("teacher", "test")]
    assert set(first.scores) == {"teacher", "random"} and all(len(v) == 2 for v in first.scores.values())
    assert all(0.0 <= v <= 1.0 for values in first.scores.values() for v in values)
    assert first.details["random"][0]["num_images"] == 24
    again = roar({"teacher": source, "random": "random"}, train, test, fractions=(0.2, 0.8), **options)
    assert again.settings["maps_computed"] == []  # maps and scores come from the cache
    assert again.scores == first.scores
    other = roar({"teacher": source}, train, test, fractions=(0.5,), **options)  # a new fraction: retrain only
    assert other.settings["maps_computed"] == []
    assert len(list(tmp_path.glob("roar-maps-*.pt"))) == 2
    figure = plot_roar(first, tmp_path / "roar.png")
    assert figure.is_file() and figure.stat().st_size > 1000
    assert "| teacher |" in first.table() and first.to_dict()["fractions"] == [0.2, 0.8]


def test_bad_arguments():
    data = _base()
    with pytest.raises(ValidationError, match="random"):
        roar({"x": "uniform"}, data, data, device="cpu")
    with pytest.raises(ValidationError, match="non-empty"):
        roar({}, data, data, device="cpu")
    with pytest.raises(ValidationError, match="fraction"):
        roar({"r": "random"}, data, data, fractions=(0.5, 1.5), device="cpu")
    with pytest.raises(UnknownNameError, match="vgg11_bn"):
        roar({"r": "random"}, data, data, classifier="vgg99", device="cpu")
    with pytest.raises(UnknownNameError, match="gradcam"):
        roar({"r": "random"}, data, data, method="nope", device="cpu")
    with pytest.raises(UnknownNameError, match="unknown training setting 'epoch'"):
        roar({"r": "random"}, data, data, {"epoch": 3}, device="cpu")
    with pytest.raises(UnknownNameError, match="unknown ROAR setting 'fraction'; did you mean fractions"):
        roar({"r": "random"}, data, data, fraction=(0.5,), device="cpu")
    with pytest.raises(UnknownNameError, match="unknown task 'regression'"):
        roar({"r": "random"}, _base(task="regression"), data, device="cpu")
    with pytest.raises(ValidationError, match="shape"):
        RemovedPixels(data, torch.zeros(3, 5, 5), 0.5)
    no_mean = TensorDataset(torch.zeros(1, 3, 2, 2), torch.ones(1, 1))
    with pytest.raises(ValidationError, match="mean"):
        RemovedPixels(no_mean, None, 0.5)
    with pytest.raises(ValidationError, match="RoarResult"):
        plot_roar({"fractions": [0.5]}, "x.png")
    assert isinstance(RoarResult([0.5], {"a": [math.nan]}, "f1").table(), str)


def test_settings_and_recipe_are_checked_values():
    settings = RoarSettings(fractions=[0.5, 1], classifier="vgg_small", train_size=10)
    assert settings.fractions == (0.5, 1.0) and settings.metric_for("multilabel") == "f1"
    assert settings.metric_for("multiclass") == "top1"
    with pytest.raises(UnknownNameError, match="unknown metric 'top1'"):
        RoarSettings(metric="top1").metric_for("multilabel")
    with pytest.raises(ValidationError, match="at least one fraction"):
        RoarSettings(fractions=())
    with pytest.raises(ValidationError, match="train_size must be >= 1"):
        RoarSettings(train_size=0)
    with pytest.raises(UnknownNameError, match="target policy"):
        RoarSettings(target_policy="label")
    assert roar_recipe(None) == DEFAULT_RECIPE == Recipe(epochs=10, lr=0.01, batch_size=64)
    assert roar_recipe({"epochs": 2}) == DEFAULT_RECIPE.replace(epochs=2)
    with pytest.raises(ValidationError, match="a Recipe or a dict"):
        roar_recipe(3)
