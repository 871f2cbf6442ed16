"""The teacher's work in an audit is done once (its logits and maps are shared by every student), and the
figures' material: the most-changed pairs, their images and masks read as the dataset says."""

import copy
import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from apkit import attribution, audit, models
from apkit.core.errors import ApkitError, UnknownNameError, ValidationError
from apkit.data import SyntheticShapes
from apkit.evaluation import localization_scores
from apkit.evaluation.audit import AuditSettings, _examples, object_masks
from apkit.evaluation.faithfulness import curve_auc, deletion_curve
from apkit.evaluation.html import render_html
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


# ------------------------------------------------------------------------------------------ without masks


class _Named(TensorDataset):
    """Plain single-label ``(image, int label)`` items, with the file and class names a folder dataset has."""

    def __init__(self, images, labels, classes):
        super().__init__(images, labels)
        self.classes = classes
        self.sample_names = [f"{classes[int(y)]}/img_{i:03d}.jpg" for i, y in enumerate(labels)]


@pytest.fixture(scope="module")
def unmasked():
    torch.manual_seed(3)
    teacher = models.create("vgg_small", num_classes=6, input_size=32, width_divisor=4).eval()
    student = copy.deepcopy(teacher)  # a perturbed copy: maps like the teacher's, not the same
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.1 * parameter.std().nan_to_num() * torch.randn_like(parameter))
    images = torch.randn(10, 3, 32, 32)
    data = _Named(images, torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3]), ("ant", "bee", "cat", "dog", "eel", "fox"))
    report = audit(teacher, {"small": student}, data, attribution_methods=["gradcam"], batch_size=4, resamples=50,
                   faithfulness_steps=4, road_percentages=(0.5,), device="cpu", progress=False,
                   gates=["agreement=0", "cos=-1", "top1_drop=1", "deletion_rise=1", "insertion_drop=1",
                          "road_drop=1"])
    return teacher, student, data, report


def test_a_mask_free_single_label_audit_measures_top1_top5_and_agreement(unmasked):
    from sklearn.metrics import accuracy_score, top_k_accuracy_score

    teacher, student, data, report = unmasked
    images, labels = data.tensors
    assert report.settings["protocol"] == "teacher" and report.settings["task"] == "multiclass"
    with torch.no_grad():
        logits = {"teacher": teacher(images), "small": student(images)}
    for name, scores in logits.items():
        assert report.predictive[name]["top1"] == pytest.approx(accuracy_score(labels, scores.argmax(1)))
        assert report.predictive[name]["top5"] == pytest.approx(
            top_k_accuracy_score(labels, scores.numpy(), k=5, labels=list(range(6))))
    agree = (logits["small"].argmax(1) == logits["teacher"].argmax(1)).double().mean()
    assert report.predictive_comparisons["small"]["agreement"]["estimate"] == pytest.approx(float(agree))
    low, high = (report.predictive_comparisons["small"]["agreement"][k] for k in ("low", "high"))
    assert 0 <= low <= float(agree) <= high <= 1


def test_without_masks_every_image_is_compared_on_the_teachers_top1_and_none_is_localized(unmasked):
    teacher, student, data, report = unmasked
    images = data.tensors[0]
    with torch.no_grad():
        top1 = teacher(images).argmax(1)
    row = report.row("small", "gradcam")
    assert row["kept"] == 0 and row["similarity_pairs"] == len(data) and math.isnan(row["auc"])
    pairs = report.pairs[("small", "gradcam")]
    assert pairs.column("class").tolist() == top1.tolist()
    ours = attribution.explain(student, images, top1, method="gradcam").flatten(1).double()
    theirs = attribution.explain(teacher, images, top1, method="gradcam").flatten(1).double()
    expected = torch.nn.functional.cosine_similarity(ours, theirs, dim=1)
    torch.testing.assert_close(pairs.column("cos"), expected, rtol=1e-4, atol=1e-5)
    assert report.comparison("small", "gradcam")["cos"]["estimate"] == pytest.approx(float(expected.mean()), rel=1e-4)


def test_the_audits_faithfulness_is_the_drivers_on_the_same_pairs_for_every_model(unmasked):
    teacher, student, data, report = unmasked
    images = data.tensors[0]
    with torch.no_grad():
        top1 = teacher(images).argmax(1)
    found = {}
    for name, model in (("teacher", teacher), ("small", student)):
        maps = attribution.explain(model, images, top1, method="gradcam")
        expected = curve_auc(deletion_curve(model, images, maps, top1, steps=4)).double()
        found[name] = report.faithfulness[(name, "gradcam")]
        torch.testing.assert_close(found[name]["deletion"], expected, rtol=1e-5, atol=1e-6)
        assert report.curves[(name, "gradcam")]["deletion"].shape == (5,)
        assert report.row(name, "gradcam")["deletion"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert report.explained.tolist() == top1.tolist()
    comparison = report.comparison("small", "gradcam")
    for metric in ("deletion", "insertion", "road"):
        difference = found["small"][metric] - found["teacher"][metric]
        assert comparison[metric]["estimate"] == pytest.approx(float(difference.mean()), rel=1e-6, abs=1e-12)
    data_json = json.loads(json.dumps(report.to_dict()))
    stored = {(e["model"], e["method"]): e for e in data_json["faithfulness"]}
    assert stored[("small", "gradcam")]["deletion"] == pytest.approx(found["small"]["deletion"].tolist())
    assert stored[("small", "gradcam")]["class"] == top1.tolist()


def test_gates_are_judged_into_the_verdict_and_names_label_the_report(unmasked, tmp_path):
    _, _, data, report = unmasked
    assert [row["gate"] for row in report.verdict] == ["agreement=0", "cos=-1", "top1_drop=1", "deletion_rise=1",
                                                       "insertion_drop=1", "road_drop=1"]
    assert all(row["passed"] for row in report.verdict) and report.failures() == []
    assert report.to_markdown().startswith("## Verdict\n\n- passed: gate agreement=0 passed for student small")
    assert report.gate(["agreement=1.01"]) and report.image_name(3) == "dog/img_003.jpg"
    assert report.class_name(5) == "fox"
    changed = next(t for t in report.tables() if t.title and t.title.startswith("The pairs whose maps"))
    assert {row[2] for row in changed.rows} <= set(data.sample_names)
    assert {row[3] for row in changed.rows} <= set(data.classes)
    titles = report.examples["gradcam"]["titles"]
    assert titles and all(t.split(": ")[0] in data.sample_names and t.split(": ")[1] in data.classes for t in titles)
    failing = copy.copy(report)
    failing.judge(["agreement=1.01"])
    page = render_html(failing, {})
    assert "Verdict" in page and "FAILED" in page and "agreement=1.01" in page


@pytest.mark.parametrize("gate,options,fragment", [
    ("auc_drop=0.1", {}, "no auc \\(the data has no masks\\)"),
    ("deletion_rise=0.1", {"faithfulness": ()}, "no deletion \\(faithfulness is not measured"),
    ("map_drop=0.1", {}, "no map_image \\(the data is single-label\\)"),
])
def test_a_gate_this_audit_cannot_judge_is_refused_before_any_model_runs(unmasked, gate, options, fragment):
    teacher, student, data, _ = unmasked
    calls = []
    handles = [m.register_forward_hook(lambda *a: calls.append(1)) for m in (teacher, student)]
    try:
        with pytest.raises(ValidationError, match=fragment):
            audit(teacher, {"small": student}, data, device="cpu", progress=False, gates=[gate], **options)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == []


def test_multilabel_data_refuses_top1_gates(setup):
    seg, teacher, student = setup
    with pytest.raises(ValidationError, match="multi-label"):
        audit(teacher, {"s": student}, seg, device="cpu", progress=False, gates=["top1_drop=0.05"])


def test_given_layers_are_used_recorded_and_a_coarse_map_is_warned_about(unmasked):
    teacher, student, data, _ = unmasked
    with pytest.warns(UserWarning, match="only 2x2"):
        report = audit(teacher, {"small": student}, data, attribution_methods=["gradcam"], faithfulness=(),
                       layers={"gradcam": "features.21"}, resamples=10, device="cpu", progress=False)
    assert report.layers == {"teacher": {"gradcam": "features.21"}, "small": {"gradcam": "features.21"}}
    assert report.settings["layers"] == {"gradcam": "features.21"} and len(report.warnings) == 2
    images = data.tensors[0]
    with torch.no_grad():
        top1 = teacher(images).argmax(1)
    expected = attribution.explain(student, images, top1, method="gradcam", layer="features.21").flatten(1).double()
    theirs = attribution.explain(teacher, images, top1, method="gradcam", layer="features.21").flatten(1).double()
    cos = report.pairs[("small", "gradcam")].column("cos")
    defined = (expected.abs().sum(1) > 0) & (theirs.abs().sum(1) > 0)  # an all-zero map has no cosine (NaN)
    assert defined.any() and torch.isnan(cos[~defined]).all()
    torch.testing.assert_close(cos[defined], torch.nn.functional.cosine_similarity(expected, theirs, dim=1)[defined],
                               rtol=1e-4, atol=1e-5)
    fine = audit(teacher, {"small": student}, data, faithfulness=(), layers={"gradcam": "features.13"},
                 resamples=10, device="cpu", progress=False)
    assert fine.warnings == [] and fine.layers["small"] == {"gradcam": "features.13"}


@pytest.mark.parametrize("layers,fragment", [({"gradcam": "features.99"}, "features.99"),
                                             ({"lrp": "features.13"}, "lrp"),
                                             ({"gradcam": 3}, "layer")])
def test_bad_layers_are_refused(unmasked, layers, fragment):
    teacher, student, data, _ = unmasked
    with pytest.raises(ApkitError, match=fragment):
        audit(teacher, {"small": student}, data, layers=layers, device="cpu", progress=False)


def test_a_plain_torchvision_imagefolder_is_audited_without_masks_and_named_by_its_files(tmp_path):
    from PIL import Image
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    for k, name in enumerate(("ant", "bee", "cat")):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 40), (80 * k, 60 * i, 30)).save(tmp_path / name / f"{name}{i}.png")
    data = ImageFolder(str(tmp_path), transform=transforms.Compose([transforms.Resize((32, 32)),
                                                                    transforms.ToTensor()]))
    torch.manual_seed(0)
    teacher = models.create("vgg_small", num_classes=3, input_size=32, width_divisor=4).eval()
    report = audit(teacher, {"copy": copy.deepcopy(teacher)}, data, faithfulness=("deletion",), faithfulness_steps=2,
                   resamples=20, device="cpu", progress=False)
    assert report.settings["task"] == "multiclass" and report.settings["protocol"] == "teacher"
    assert report.image_names == ["ant/ant0.png", "ant/ant1.png", "bee/bee0.png", "bee/bee1.png", "cat/cat0.png",
                                  "cat/cat1.png"]
    assert report.class_names == ["ant", "bee", "cat"]
    assert report.predictive_comparisons["copy"]["agreement"]["estimate"] == 1.0  # the same model agrees everywhere
    assert report.comparison("copy", "gradcam")["deletion"]["estimate"] == 0.0
