"""The teacher's work in an audit is done once (its logits and maps are shared by every student), and the
figures' material: the most-changed pairs, their images and masks read as the dataset says."""

import pytest
import torch

from apkit import audit, models
from apkit.core.errors import UnknownNameError
from apkit.data import SyntheticShapes
from apkit.evaluation import localization_scores
from apkit.evaluation.audit import AuditSettings, _examples, object_masks
from apkit.evaluation.maps import MapCache
from apkit.evaluation.pairs import PairTable

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    seg = SyntheticShapes("seg", num_samples=24, image_size=32)
    teacher = models.create("vgg_small", num_classes=8, input_size=32, width_divisor=4).eval()
    student = models.create("vgg_small", num_classes=8, input_size=32, width_divisor=8)
    return seg, teacher, student


def _teacher_calls(teacher, students, seg):
    calls = []
    handle = teacher.register_forward_hook(lambda _m, inputs, _o: calls.append(len(inputs[0])))
    try:
        # Without faithfulness, whose curves run the teacher once per audit however many students there are.
        report = audit(teacher, students, seg, attribution_methods=["gradcam", "excitation"], batch_size=8,
                       device="cpu", progress=False, faithfulness=())
    finally:
        handle.remove()
    return len(calls), report


def test_three_students_cost_the_teacher_what_one_does(setup):
    seg, teacher, student = setup
    one, single = _teacher_calls(teacher, {"a": student}, seg)
    three, triple = _teacher_calls(teacher, {"a": student, "b": student, "c": student}, seg)
    assert three == one  # the same pairs: every teacher map is read from the cache
    for name in ("a", "b", "c"):  # and the numbers are those of a lone audit
        assert triple.row(name, "gradcam") == single.row("a", "gradcam") | {"model": name}
    # Without the cache each student would recompute the teacher's logits and maps of every batch.
    recomputed = []
    handle = teacher.register_forward_hook(lambda *a: recomputed.append(1))
    try:
        for _ in range(3):
            localization_scores(student, seg, teacher=teacher, batch_size=8, device="cpu", progress=False)
    finally:
        handle.remove()
    assert len(recomputed) > three


def test_the_cache_gives_the_maps_it_would_compute(setup):
    seg, teacher, student = setup
    cache = MapCache(teacher)
    cached = localization_scores(student, seg, teacher=teacher, teacher_cache=cache, batch_size=8, device="cpu",
                                 progress=False)
    plain = localization_scores(student, seg, teacher=teacher, batch_size=8, device="cpu", progress=False)
    for column, values in plain.pairs.items():
        torch.testing.assert_close(cached.pairs[column], values, equal_nan=True)
    assert cache.stored("gradcam") == int(cached.totals.kept)  # the maps of the pairs compared
    with pytest.raises(Exception, match="another model"):
        localization_scores(student, seg, teacher=teacher, teacher_cache=MapCache(student), device="cpu",
                            progress=False)


def test_object_masks_read_the_masks_as_the_dataset_says():
    masks = torch.tensor([[[0, 1, 3], [255, 3, 1]], [[0, 1, 3], [255, 3, 1]]], dtype=torch.uint8)
    classes = torch.tensor([2, 0])
    assert object_masks(masks, classes, "class").int().tolist() == [[[0, 0, 1], [0, 1, 0]], [[0, 1, 0], [0, 0, 1]]]
    objects = [[0, 1, 1], [0, 1, 1]]  # anything but background and void, whatever the class
    assert object_masks(masks, classes, "object").int().tolist() == [objects, objects]
    with pytest.raises(UnknownNameError, match="mask_kind"):
        object_masks(masks, classes, "instance")


class _ObjectMasks(torch.utils.data.Dataset):
    """ImageNet-like: mask value 1 marks the object, whatever the class explained."""

    mask_kind = "object"
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self):
        self.masks = torch.zeros(3, 32, 32, dtype=torch.uint8)
        self.masks[:, 8:20, 8:20] = 1

    def __len__(self):
        return 3

    def __getitem__(self, index):
        return torch.full((3, 32, 32), 0.5 * index), torch.zeros(8), self.masks[index]


def test_the_figures_mask_panel_shows_imagenet_objects(setup):
    _, teacher, student = setup
    data = _ObjectMasks()
    # The student's pairs explain class 5 (not 0): "mask == class + 1" would draw empty panels.
    pairs = {("small", "gradcam"): PairTable.from_dict({"image": [0, 2], "class": [5, 5], "kept": [True, True],
                                                        "cos": [0.5, 0.25], "auc": [0.5, 0.5]})}
    shown = _examples(teacher, {"small": student}, data, pairs=pairs, method="gradcam",
                      settings=AuditSettings(examples=2, device="cpu"))
    assert shown["pairs"] == [(2, 5), (0, 5)]  # lowest cosine first
    assert shown["masks"].shape == (2, 32, 32) and int(shown["masks"].sum()) == 2 * 12 * 12
    assert torch.equal(shown["masks"][0], data.masks[2] == 1)
    # The images are shown denormalised: 0.5 * 2 * 0.25 + 0.5 for image 2.
    assert torch.allclose(shown["images"][0], torch.full((3, 32, 32), 0.75))
    assert set(shown["maps"]) == {"teacher", "small"} and shown["maps"]["small"].shape == (2, 32, 32)


def test_audit_options_are_checked_by_name():
    with pytest.raises(UnknownNameError, match="did you mean resamples"):
        AuditSettings.from_options(resample=10)
    settings = AuditSettings.from_options(AuditSettings(resamples=10, seed=3), seed=4)
    assert (settings.resamples, settings.seed) == (10, 4)
    assert settings.bootstrap == {"resamples": 10, "confidence": 0.95, "seed": 4}
