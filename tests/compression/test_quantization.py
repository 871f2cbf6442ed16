"""ptq and qat: from the command line and the API, audited on the int8 model and its fake-quant twin."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from helpers import TinyImages, run_cli

from apkit import models
from apkit.compression import compress
from apkit.compression.quantization import QuantizationSettings
from apkit.core.errors import ValidationError
from apkit.evaluation import audit
from apkit.models.quantized import TWIN_TOLERANCE, QuantizedModel, prepare
from apkit.training import classification_metrics, datasets_for, predict

SMALL = ["--train-samples", 32, "--val-samples", 16, "--epochs", 1, "--batch-size", 16, "--device", "cpu", "--quiet"]


@pytest.mark.usefixtures("one_thread")
def test_cli_qat_swa_and_ptq_then_audit_on_int8_and_twin(tmp_path, capsys):
    torch.manual_seed(0)
    teacher = models.create("vgg_small", num_classes=8, input_size=32, width_divisor=4)
    teacher_path = models.save_checkpoint(teacher, tmp_path / "teacher.pt")
    for method, extra in (("qat", ["--regularizer", "swa"]), ("ptq", [])):
        code, out, err = run_cli(["compress", "--teacher", teacher_path, "--method", method, *extra, "--bits", 8,
                                  "--out", tmp_path / method, *SMALL], capsys)
        assert code == 0, err
        assert "int8 (8-bit weights)" in out and f"{tmp_path / method}/model.pt" in out
        record = json.loads((tmp_path / method / "record.json").read_text())
        quantization = record["quantization"]
        assert quantization["bits"] == 8 and quantization["twin"]["top1_agreement"] == 1.0
        # int8 weights; biases, scales and key names stay: 2.6x for this 18k-parameter model (4x for larger ones).
        assert 2.0 < quantization["size"]["ratio"] < 4.1
    assert "match" in json.dumps(json.loads((tmp_path / "qat" / "record.json").read_text())["history"])

    students = [tmp_path / "qat" / "model.pt", tmp_path / "ptq" / "model.pt"]
    code, _, err = run_cli(["audit", "--teacher", teacher_path, *sum((["--student", s] for s in students), []),
                            "--samples", 12, "--methods", "gradcam,lrp", "--resamples", 50, "--batch-size", 6,
                            "--device", "cpu", "--quiet", "--out", tmp_path / "audit"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    data = datasets_for(teacher, "synthetic", {"seg": 12})["seg"]
    for name, path in zip(("qat", "ptq"), students):
        entry = report["quantized"][name]
        assert entry["measured_on"]["predictive"] == "int8 model"
        assert entry["measured_on"]["attribution"] == "fake-quant twin"
        twin = entry["twin"]
        assert twin["images"] == 12 and twin["top1_agreement"] >= TWIN_TOLERANCE["top1_agreement"]
        assert twin["max_abs_diff"] <= TWIN_TOLERANCE["relative_diff"] * twin["max_abs_logit"]
        # The predictive metrics are the int8 model's own: recomputed here from its logits.
        int8 = models.load_checkpoint(path)
        assert isinstance(int8, QuantizedModel)
        logits, labels = predict(int8, data, device="cpu", progress=False)
        assert report["predictive"][name] == pytest.approx(classification_metrics(logits, labels, task=data.task))
        methods = {row["method"] for row in report["rows"] if row["model"] == name}
        assert methods == {"gradcam", "lrp"}


def test_torchvision_mobilenet_v2_ptq_audited_with_gradcam_and_lrp():
    torch.manual_seed(0)
    data = TinyImages(24, num_classes=3, image_size=32)
    teacher = torchvision.models.mobilenet_v2(weights=None, num_classes=3)
    teacher.train()
    with torch.no_grad():  # running statistics of the data, as training would leave them
        teacher(data.tensors[0])
    teacher.eval()
    int8, record = compress(teacher, "ptq", "none", train_set=data, progress=False, device="cpu",
                            calibration_batches=2, batch_size=12)
    assert isinstance(int8, QuantizedModel) and record.quantization["bits"] == 8
    assert record.val == {} and record.params == pytest.approx(sum(p.numel() for p in teacher.parameters()), rel=0.1)
    report = audit(teacher, {"int8": int8}, data, attribution_methods=["gradcam", "lrp"], resamples=20,
                   progress=False, device="cpu", examples=2)
    assert report.quantized["int8"]["twin"]["top1_agreement"] >= TWIN_TOLERANCE["top1_agreement"]
    for method in ("gradcam", "lrp"):
        row = report.row("int8", method)
        assert row["kept"] > 0 and 0.0 <= row["auc"] <= 1.0


def test_qat_student_is_fake_quantized_with_straight_through_gradients():
    net = models.create("vgg_small", num_classes=3, input_size=32, width_divisor=4)
    student = prepare(net, torch.randn(1, 3, 32, 32), bits=4, qat=True)
    images = torch.randn(4, 3, 32, 32, requires_grad=True)
    student(images).sum().backward()
    assert images.grad.abs().sum() > 0
    assert student.matching_layer == net.matching_layer  # where the regularizer's hooks go


def test_ptq_refuses_a_regularizer_and_bad_bits_before_any_work(tmp_path, capsys):
    data = TinyImages(8, num_classes=3, image_size=32)
    teacher = models.create("vgg_small", num_classes=3, input_size=32, width_divisor=4)
    with pytest.raises(ValidationError, match="ptq.*takes no regularizer.*qat"):
        compress(teacher, "ptq", "swa", train_set=data, progress=False)
    with pytest.raises(ValidationError, match="bits must be one of 8, 4, 2"):
        QuantizationSettings(bits=3)
    code, _, err = run_cli(["compress", "--teacher", tmp_path / "missing.pt", "--method", "ptq", "--regularizer",
                            "swa", "--out", tmp_path / "out"], capsys)
    assert code == 1 and "takes no regularizer" in err


def test_audit_model_explains_an_int8_model_through_its_twin():
    from apkit.evaluation import audit_model
    from apkit.models.quantized import quantized_twin

    data = TinyImages(12, num_classes=3, image_size=32)
    teacher = models.create("vgg_small", num_classes=3, input_size=32, width_divisor=4)
    int8, _ = compress(teacher, "ptq", "none", train_set=data, progress=False, device="cpu", calibration_batches=1)
    result = audit_model(int8, data, attribution_methods=["gradcam"], progress=False, device="cpu")
    on_twin = audit_model(int8, data, explained=quantized_twin(int8), attribution_methods=["gradcam"],
                          progress=False, device="cpu")
    assert result.methods["gradcam"]["auc"] == pytest.approx(on_twin.methods["gradcam"]["auc"])
    logits, labels = predict(int8, data, device="cpu", progress=False)
    assert result.predictive == pytest.approx(classification_metrics(logits, labels, task=data.task))


@pytest.mark.usefixtures("one_thread")
def test_torchvision_resnet18_qat_with_swa_at_4_bits():
    torch.manual_seed(0)
    data = TinyImages(32, num_classes=3, image_size=32)
    teacher = torchvision.models.resnet18(weights=None, num_classes=3).train()
    with torch.no_grad():  # running statistics of the data, as training would leave them
        teacher(data.tensors[0])
    int8, record = compress(teacher.eval(), "qat", "swa", train_set=data, progress=False, device="cpu",
                            settings={"bits": 4, "epochs": 1, "batch_size": 16})
    assert isinstance(int8, QuantizedModel) and int8.bits == 4
    assert record.quantization["bits"] == 4
    assert record.quantization["twin"]["top1_agreement"] >= TWIN_TOLERANCE["top1_agreement"]
    # The regularizer matched the teacher's maps at its default layer: the loss has its term.
    assert all(epoch["train_match"] > 0 for epoch in record.history)
    levels = next(m for m in int8.modules() if type(m).__name__ == "ConvReLU2d").weight().int_repr()
    assert levels.abs().max() == 7
