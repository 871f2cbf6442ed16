"""The teacher's outputs computed once per training image give the training of recomputing them every step."""

import pytest
import torch

from apkit import models
from apkit.compression import compress
from apkit.compression.teacher_cache import TeacherCache, can_cache
from apkit.data import SyntheticShapes
from apkit.regularizers import AttributionMatchingLoss

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    train = SyntheticShapes("train", num_samples=96, image_size=32)
    val = SyntheticShapes("val", num_samples=32, image_size=32)
    torch.manual_seed(0)
    teacher = models.create("vgg_small", num_classes=8, input_size=32, width_divisor=4)
    return train, val, teacher


def _terms(record):
    epochs = record.history if record.history is not None else [s["best_metrics"] for s in record.steps]
    return [{k: v for k, v in epoch.items() if k.startswith(("train_", "val_"))} for epoch in epochs]


@pytest.mark.parametrize("method,regularizer", [("kd", "none"), ("kd", "swa"), ("kd", "sswa"), ("structured", "ewa"),
                                                ("unstructured", "sswa")])
def test_cached_teacher_gives_the_same_training(setup, method, regularizer):
    train, val, teacher = setup
    assert can_cache(train) and not can_cache(torch.utils.data.TensorDataset(torch.zeros(1)))
    options = dict(epochs=2, batch_size=16, device="cpu", progress=False, seed=3)
    if method == "unstructured":
        options.update(amount=0.5, steps=2)
    runs = {cache: compress(teacher, method, regularizer, train_set=train, val_set=val, cache_teacher=cache,
                            **options)
            for cache in (True, False)}
    cached, recomputed = runs[True], runs[False]
    assert "teacher_cache_s" in cached[1].timings and "teacher_cache_s" not in recomputed[1].timings
    for a, b in zip(_terms(cached[1]), _terms(recomputed[1]), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    for (name, p), q in zip(cached[0].state_dict().items(), recomputed[0].state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_cache_rows_equal_a_teacher_pass(setup):
    train, _, teacher = setup
    regularizer = AttributionMatchingLoss("sswa")
    cache = TeacherCache.build(teacher, train, regularizer=regularizer, device=torch.device("cpu"), batch_size=40)
    assert len(cache) == len(train)
    index = torch.tensor([5, 77, 3])
    images = torch.stack([train[int(i)][0] for i in index])
    direct = regularizer.teacher_evidence(teacher, images)
    rows = cache.lookup(index)
    for name in ("logits", "activations", "alpha"):
        torch.testing.assert_close(getattr(rows, name), getattr(direct, name), rtol=1e-5, atol=1e-6)
    assert torch.equal(rows.target, direct.target)
    # SSWA draws its channels per batch from its own generator, cached or not.
    regularizer.reset_generator(1)
    from_cache = regularizer.teacher_map(rows)
    regularizer.reset_generator(1)
    from_pass = regularizer.teacher_pass(teacher, images)
    assert torch.equal(from_cache.dropped, from_pass.dropped)
    torch.testing.assert_close(from_cache.map, from_pass.map, rtol=1e-5, atol=1e-6)
