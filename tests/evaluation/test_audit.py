"""The teacher's work in an audit is done once: its logits and maps are shared by every student."""

import pytest
import torch

from apkit import audit, models
from apkit.data import SyntheticShapes
from apkit.evaluation import localization_scores
from apkit.evaluation.maps import MapCache

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
        report = audit(teacher, students, seg, attribution_methods=["gradcam", "excitation"], batch_size=8,
                       device="cpu", progress=False)
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
