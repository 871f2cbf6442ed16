"""The localization protocol against a per-pair reference loop written as the paper's script (METHOD §4.2)."""

import math
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_curve
from torch import nn
from torch.utils.data import TensorDataset

import apkit
import apkit.attribution
from apkit import models
from apkit.core.errors import DataError, UnknownNameError, ValidationError
from apkit.evaluation.localization import LocalizationSettings, LocalizationTotals, localization_scores
from apkit.metrics import normalize_maps

NUM_CLASSES = 4
SIZE = 12


class Lookup(nn.Module):
    """Logits read from a table by the image index stored in pixel (0, 0, 0)."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, images):
        return self.table[images[:, 0, 0, 0].long()]


def _fake_explain(model, images, pairs, method="gradcam", layer=None, **kw):
    """Deterministic maps: channel ``class % 3`` of the image, scaled by a model-specific factor."""
    maps = images[pairs[:, 0], pairs[:, 1] % 3].clone()
    maps[:, 0, 0] = -5.0  # hide the index pixel
    if getattr(model, "bend", False):  # the "student" deforms its maps
        maps = maps ** 2
    if getattr(model, "nan_for", None) is not None:
        for image, cls in model.nan_for:
            hit = (images[pairs[:, 0], 0, 0, 0].long() == image) & (pairs[:, 1] == cls)
            maps[hit] = math.nan
    return maps


def _dataset(n=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, SIZE, SIZE, generator=gen)
    images[:, 0, 0, 0] = torch.arange(n).float()
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.uint8)
    for i in range(n):
        for k in torch.randperm(NUM_CLASSES, generator=gen)[: 1 + i % 3].tolist():
            r, c = torch.randint(0, SIZE - 4, (2,), generator=gen).tolist()
            masks[i, r:r + 4, c:c + 5] = k + 1
    masks[3, :2, :] = 255  # void pixels
    data = TensorDataset(images, torch.zeros(n, NUM_CLASSES), masks)
    data.num_classes = NUM_CLASSES
    return data


def _reference(model, data, *, tolerance=0, teacher=None, explain=_fake_explain):
    """The paper's evaluation loop, one image and one class at a time, with scikit-learn."""
    rows = []
    for i in range(len(data)):
        image, _, mask = data[i]
        logits = model(image[None])[0]
        for k in range(NUM_CLASSES):
            if not (mask == k + 1).any():
                continue
            heat = explain(model, image[None], torch.tensor([[0, k]]))[0]  # float32, as the paper's numpy maps
            if torch.isnan(heat).any():
                continue
            if logits[k] <= 0:
                rows.append((i, k, False, math.nan, math.nan, math.nan))
                continue
            m = (mask == k + 1).numpy()
            h = heat.numpy()
            r, c = np.where(h == h.max())
            hit = float(m[r[0], c[0]]) if tolerance == 0 else math.nan
            keep = (mask != 255).numpy().ravel()  # void pixels are left out of the AUC
            hn = normalize_maps(heat[None])[0].numpy().ravel()
            fpr, tpr, _ = roc_curve(m.ravel()[keep], hn[keep])
            cos = math.nan
            if teacher is not None:
                t = explain(teacher, image[None], torch.tensor([[0, k]]))[0].double().numpy().ravel()
                h64 = h.ravel().astype(np.float64)
                cos = float(h64 @ t / (np.linalg.norm(h64) * np.linalg.norm(t)))
            rows.append((i, k, True, sk_auc(fpr, tpr), hit, cos))
    return rows


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(apkit.attribution, "explain", _fake_explain)
    gen = torch.Generator().manual_seed(5)
    return Lookup(torch.randn(10, NUM_CLASSES, generator=gen))


def test_voc_protocol_equals_reference_loop(fake):
    data = _dataset()
    result = localization_scores(fake, data, device="cpu", batch_size=3, progress=False)
    ref = _reference(fake, data)
    pairs = result.pairs
    assert pairs["image"].tolist() == [r[0] for r in ref]
    assert pairs["class"].tolist() == [r[1] for r in ref]
    assert pairs["kept"].tolist() == [r[2] for r in ref]
    np.testing.assert_allclose(pairs["auc"].numpy(), [r[3] for r in ref], atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(pairs["hit"].numpy(), [r[4] for r in ref], equal_nan=True)
    summary = result.summary()
    kept = [r for r in ref if r[2]]
    assert summary["kept"] == len(kept) and summary["skipped_wrong"] == len(ref) - len(kept)
    assert summary["auc"] == pytest.approx(np.mean([r[3] for r in kept]), abs=1e-12)
    assert summary["pointing"] == pytest.approx(np.mean([r[4] for r in kept]))
    assert math.isnan(summary["cos"])  # no teacher


def test_extra_tolerances_equal_separate_runs(fake):
    data = _dataset()
    together = localization_scores(fake, data, tolerances=(0, 2, 5), device="cpu", batch_size=3, progress=False)
    summary = together.summary()
    for tolerance in (2, 5):
        alone = localization_scores(fake, data, tolerances=(tolerance,), device="cpu", batch_size=3, progress=False)
        assert summary[f"pointing@{tolerance}"] == alone.summary()["pointing"]
        np.testing.assert_array_equal(together.pairs[f"hit@{tolerance}"].numpy(), alone.pairs["hit"].numpy())
    strict = localization_scores(fake, data, device="cpu", batch_size=3, progress=False).summary()
    assert {k: v for k, v in summary.items() if "@" not in k} == pytest.approx(strict, nan_ok=True)
    with pytest.raises(ValidationError, match="tolerances"):
        localization_scores(fake, data, tolerances=(0, -1), device="cpu", progress=False)


def test_similarity_with_teacher_and_nan_maps(fake):
    data = _dataset()
    student = Lookup(fake.table.clone())
    student.bend = True
    first_kept = next(r for r in _reference(student, data) if r[2])
    student.nan_for = [first_kept[:2]]  # one kept pair's map holds NaN: skipped
    result = localization_scores(student, data, teacher=fake, device="cpu", batch_size=4, progress=False)
    ref = _reference(student, data, teacher=fake)
    kept = [r for r in ref if r[2]]
    summary = result.summary()
    assert summary["kept"] == len(kept) and summary["skipped_invalid"] == 1
    assert summary["cos"] == pytest.approx(np.mean([r[5] for r in kept]), abs=1e-6)
    assert summary["similarity_pairs"] == len(kept)
    # "all": every ground-truth pair (wrongly predicted ones too) enters the similarity
    everything = localization_scores(student, data, teacher=fake, similarity="all", device="cpu", progress=False)
    assert everything.summary()["similarity_pairs"] == everything.summary()["candidates"] - 1  # minus the NaN map


def test_imagenet_protocol_uses_top1_and_object_mask(fake):
    data = _dataset()
    result = localization_scores(fake, data, protocol="imagenet", tolerances=(2,), device="cpu", progress=False)
    top1 = fake.table.argmax(1)
    assert result.pairs["class"].tolist() == top1.tolist()
    for i in (0, 3):
        image, _, mask = data[i]
        heat = _fake_explain(fake, image[None], torch.tensor([[0, int(top1[i])]]))[0]
        obj = ((mask > 0) & (mask != 255)).numpy()
        keep = (mask != 255).numpy().ravel()
        fpr, tpr, _ = roc_curve(obj.ravel()[keep], normalize_maps(heat[None])[0].numpy().ravel()[keep])
        assert result.pairs["auc"][i].item() == pytest.approx(sk_auc(fpr, tpr), abs=1e-9)


def test_totals_merge_and_summary():
    a = LocalizationTotals.zeros(3)
    a.kept += 4
    a.hits += 3
    a.class_kept[1] += 4
    a.class_hits[1] += 3
    b = LocalizationTotals.zeros(3)
    b.kept += 1
    b.class_kept[2] += 1
    both = a.merge(b)
    summary = both.summary()
    assert summary["kept"] == 5 and summary["pointing"] == pytest.approx(0.6)
    assert summary["pointing_class_avg"] == pytest.approx((0.75 + 0.0) / 2)
    assert both.all_reduce().summary() == summary  # a single process: unchanged
    with pytest.raises(ValidationError):
        a.merge(LocalizationTotals.zeros(4))


def test_real_model_equals_per_pair_explain(tmp_path):
    torch.manual_seed(0)
    # float64, so that batched and one-by-one maps agree to the last bits and no near-tie flips
    net = models.create("vgg_small", num_classes=NUM_CLASSES, input_size=32, width_divisor=4).double()
    with torch.no_grad():
        net.classifier[-1].bias.fill_(0.5)  # predict most classes, so most pairs are kept
    data = _dataset(6)
    data.tensors = (torch.randn(6, 3, 32, 32, dtype=torch.float64), data.tensors[1],
                    torch.nn.functional.interpolate(data.tensors[2][:, None].float(), size=32,
                                                    mode="nearest")[:, 0].to(torch.uint8))
    training = net.training
    result = localization_scores(net, data, device="cpu", batch_size=4, progress=False)
    assert net.training == training
    net.eval()
    ref = _reference(net, data, explain=lambda m, x, p, **kw: apkit.explain(m, x, p, method="gradcam"))
    np.testing.assert_allclose(result.pairs["auc"].numpy(), [r[3] for r in ref], atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(result.pairs["hit"].numpy(), [r[4] for r in ref], equal_nan=True)


def _worker(rank, world, init_file, out_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        apkit.attribution.explain = _fake_explain
        gen = torch.Generator().manual_seed(5)
        model = Lookup(torch.randn(10, NUM_CLASSES, generator=gen))
        result = localization_scores(model, _dataset(), device="cpu", batch_size=2, progress=False)
        if rank == 0:
            torch.save({"summary": result.summary(), "pairs": result.pairs}, out_file)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_give_the_single_process_result(fake, tmp_path):
    single = localization_scores(fake, _dataset(), device="cpu", batch_size=2, progress=False)
    init_file = os.path.join(tempfile.mkdtemp(dir=tmp_path), "init")
    out_file = tmp_path / "out.pt"
    # fork: the children start at once, with this process's imports (and patched explain)
    mp.start_processes(_worker, args=(2, init_file, str(out_file)), nprocs=2, join=True, start_method="fork")
    both = torch.load(out_file, weights_only=False)
    expected = single.summary()
    for key, value in both["summary"].items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(expected[key])
        else:
            assert value == pytest.approx(expected[key], abs=1e-12)
    for name, values in single.pairs.items():
        np.testing.assert_array_equal(both["pairs"][name].numpy(), values.numpy())


def test_errors(fake):
    data = _dataset()
    with pytest.raises(UnknownNameError, match="gradcam"):
        localization_scores(fake, data, method="nope", device="cpu", progress=False)
    with pytest.raises(UnknownNameError, match="voc"):
        localization_scores(fake, data, protocol="coco", device="cpu", progress=False)
    with pytest.raises(UnknownNameError, match="kept"):
        localization_scores(fake, data, similarity="some", device="cpu", progress=False)
    with pytest.raises(ValidationError, match="tolerance"):
        localization_scores(fake, data, tolerances=(-1,), device="cpu", progress=False)
    with pytest.raises(ValidationError, match="Module"):
        localization_scores("model", data, device="cpu", progress=False)
    bad = _dataset()
    bad.tensors[2][0, 5, 5] = 7  # class 6 of a 4-class dataset
    with pytest.raises(DataError, match="mask value 7"):
        localization_scores(fake, bad, device="cpu", progress=False)
    wrong = _dataset()
    wrong.num_classes = 5
    with pytest.raises(ValidationError, match="outputs"):
        localization_scores(fake, wrong, device="cpu", progress=False)
    # Items without masks read as all-void masks: no ground-truth class, so "voc" has no pair to score,
    # and "teacher" explains every image's top-1 class, compared but not localized.
    no_masks = TensorDataset(data.tensors[0], data.tensors[1])
    assert localization_scores(fake, no_masks, device="cpu", progress=False).summary()["candidates"] == 0
    unlocalized = localization_scores(fake, no_masks, protocol="teacher", device="cpu", progress=False).summary()
    assert unlocalized["candidates"] == len(no_masks) and unlocalized["kept"] == 0
    with pytest.raises(DataError, match="image, label"):
        localization_scores(fake, TensorDataset(data.tensors[0]), device="cpu", progress=False)


def test_options_come_as_keywords_or_as_one_settings_value(fake):
    data = _dataset()
    settings = LocalizationSettings(tolerances=(0, 2), batch_size=3, device="cpu", progress=False)
    given = localization_scores(fake, data, settings=settings)
    keywords = localization_scores(fake, data, tolerances=(0, 2), batch_size=3, device="cpu", progress=False)
    assert given.summary() == pytest.approx(keywords.summary(), nan_ok=True)
    assert given.settings == keywords.settings and given.settings["similarity_method"] == "gradcam"
    # A keyword overrides the settings' field.
    assert localization_scores(fake, data, settings=settings, tolerances=(0,)).settings["tolerances"] == [0]
    with pytest.raises(UnknownNameError, match="did you mean method"):
        localization_scores(fake, data, methd="gradcam", device="cpu", progress=False)


def test_the_teacher_protocol_explains_the_teachers_top1_of_every_image_and_localizes_only_masked_ones():
    from apkit.evaluation.localization import select_pairs

    masks = torch.full((3, 2, 2), 255, dtype=torch.uint8)  # image 0 has no mask
    masks[1] = torch.tensor([[0, 2], [0, 0]])  # image 1: its object at the top right
    masks[2] = torch.tensor([[0, 0], [0, 0]])  # image 2: a mask without an object
    student = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0]])  # top-1: 1, 0, 2
    teacher = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # top-1: 1, 1, 1
    chosen = select_pairs("teacher", masks, student, num_classes=3, teacher_logits=teacher)
    assert chosen.pairs.tolist() == [[0, 1], [1, 1], [2, 1]]  # the teacher's class, not the student's
    assert chosen.correct.tolist() == [True, False, False]  # the student agrees with the teacher on image 0
    assert chosen.kept.tolist() == [False, True, False] and chosen.similar.tolist() == [True, True, True]
    assert chosen.objects[1].tolist() == [[False, True], [False, False]]
    alone = select_pairs("teacher", masks, teacher, num_classes=3)  # the teacher's own run
    assert alone.pairs[:, 1].tolist() == [1, 1, 1] and not alone.similar.any()
