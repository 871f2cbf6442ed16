"""The audit's faithfulness: the values faithfulness_scores stores are those of the drivers called directly on the
teacher's top-1 class, image by image in dataset order; its settings are checked."""

import pytest
import torch
from torch.utils.data import TensorDataset

from apkit import attribution, models
from apkit.core.errors import ValidationError
from apkit.evaluation.audit_faithfulness import FaithfulnessSettings, faithfulness_scores, stored_values
from apkit.evaluation.faithfulness import curve_auc, deletion_curve, insertion_curve, road
from apkit.evaluation.maps import MapCache

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = FaithfulnessSettings(steps=4, road_percentages=(0.25, 0.75), chunk=3)


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    teacher = models.create("vgg_small", num_classes=4, input_size=32, width_divisor=4).eval()
    student = models.create("vgg_small", num_classes=4, input_size=32, width_divisor=8).eval()
    images = torch.randn(7, 3, 32, 32)
    data = TensorDataset(images, torch.tensor([0, 1, 2, 3, 0, 1, 2]))  # plain (image, int) items, no masks
    return teacher, student, images, data


def test_the_stored_values_are_the_drivers_on_the_teachers_top1(case):
    teacher, student, images, data = case
    teacher_cache = MapCache(teacher)
    result = faithfulness_scores(student, data, method="gradcam", cache=MapCache(student), reference=teacher_cache,
                                 settings=SETTINGS, batch_size=3)  # three batches: 3, 3 and 1 images
    with torch.no_grad():
        top1 = teacher(images).argmax(1)
    maps = attribution.explain(student, images, top1, method="gradcam")  # the student's maps, the teacher's class
    deletion = deletion_curve(student, images, maps, top1, steps=4, baseline=0.0)
    insertion = insertion_curve(student, images, maps, top1, steps=4, baseline="blur")
    morf = road(student, images[:3], maps[:3], top1[:3], percentages=(0.25, 0.75), order="morf", batch_size=3)
    lerf = road(student, images[:3], maps[:3], top1[:3], percentages=(0.25, 0.75), order="lerf", batch_size=3)
    assert torch.equal(result.classes, top1) and torch.equal(result.images, torch.arange(7))
    torch.testing.assert_close(result.values["deletion"], curve_auc(deletion).double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.values["insertion"], curve_auc(insertion).double(), rtol=1e-5, atol=1e-6)
    # ROAD's noise is drawn per call: the first batch's values are those of one direct call with the same seed.
    torch.testing.assert_close(result.values["road_morf"][:3], morf.mean(1).double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.values["road"][:3], (lerf - morf).mean(1).double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.curves["deletion"], deletion.double().mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.curves["insertion"], insertion.double().mean(0), rtol=1e-5, atol=1e-6)
    summary = result.summary()
    assert summary["deletion"] == pytest.approx(float(curve_auc(deletion).mean()), rel=1e-5)
    stored = stored_values({"gradcam": result})["gradcam"]
    assert stored["class"] == top1.tolist() and len(stored["deletion"]) == 7 and len(stored["curves"]["deletion"]) == 5


def test_without_a_reference_the_model_explains_its_own_top1_and_reads_its_cached_maps(case):
    teacher, _, images, data = case
    cache = MapCache(teacher)
    first = faithfulness_scores(teacher, data, method="gradcam", cache=cache,
                                settings=FaithfulnessSettings(metrics=("deletion",), steps=2))
    with torch.no_grad():
        assert torch.equal(first.classes, teacher(images).argmax(1))
    assert set(first.values) == {"deletion"} and cache.stored("gradcam") == 7
    again = faithfulness_scores(teacher, data, method="gradcam", cache=cache,
                                settings=FaithfulnessSettings(metrics=("deletion",), steps=2))
    assert torch.equal(first.values["deletion"], again.values["deletion"]) and cache.stored("gradcam") == 7


@pytest.mark.parametrize("options,fragment", [
    ({"metrics": ("deletion", "pixel_flipping")}, "unknown faithfulness metric 'pixel_flipping'"),
    ({"metrics": "deletion"}, "must list metrics"),
    ({"steps": 0}, "faithfulness_steps"),
    ({"road_percentages": (0.5, 1.5)}, "road_percentages"),
    ({"road_percentages": ()}, "road_percentages"),
])
def test_bad_settings_are_refused(options, fragment):
    with pytest.raises(ValidationError, match=fragment):
        FaithfulnessSettings(**options).checked()
