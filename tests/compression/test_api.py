"""compress(): every method end to end on tiny data, records, resume, and the CLI."""

import copy
import json

import pytest
import torch
import torch_pruning as tp
from helpers import TinyImages

import apkit.compression.api as api
from apkit import models
from apkit.compression import compress, default_settings, has_masks
from apkit.core.errors import CheckpointError, UnknownNameError, ValidationError

FAST = dict(epochs=1, batch_size=16, lr=0.01)


@pytest.fixture(scope="module")
def data():
    return TinyImages(48, seed=0), TinyImages(16, seed=1)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return models.create("vgg_small", num_classes=3, input_size=16).eval()


def _untouched(teacher, before):
    return (all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
            and all(p.grad is None for p in teacher.parameters())
            and not any(m._forward_hooks or m._forward_pre_hooks for m in teacher.modules()))


@pytest.mark.parametrize("method,reg,options", [
    ("kd", "sswa", dict(width_divisor=2)),
    ("structured", "swa", dict(pruning_ratio=0.5)),
    ("unstructured", "ewa", dict(amount=0.5, steps=2)),
])
def test_compress_each_method_writes_a_correct_record(tmp_path, data, teacher, method, reg, options):
    before = copy.deepcopy(teacher.state_dict())
    model, record = compress(teacher, method, reg, train_set=data[0], val_set=data[1], out_dir=tmp_path,
                             device="cpu", progress=False, **FAST, **options)
    assert _untouched(teacher, before)
    assert not has_masks(model) and not model.training
    example = torch.randn(1, 3, 16, 16)
    assert record.params == models.count_parameters(model)
    assert record.nonzero_params == models.count_parameters(model, nonzero=True)
    assert record.macs == int(tp.utils.count_ops_and_params(model, example)[0])
    assert record.teacher["params"] == models.count_parameters(teacher)
    assert record.compression_ratio == pytest.approx(record.teacher["params"] / record.nonzero_params)
    assert record.settings["epochs"] == 1 and record.method == method and record.regularizer == reg
    assert set(record.val) >= {"map_class", "map_image", "f1"}
    assert record.timings["total_s"] >= record.timings["finetune_s"] > 0
    if method == "kd":
        assert record.config == [8, "M", 16, "M", 32, 32, "M", 64, 64, "M"]
        assert record.best_epoch == 1 and "train_match" in record.history[0]
    elif method == "structured":
        assert record.config == [8, "M", 16, "M", 32, 32, "M", 64, 64, "M"]
        assert record.val_after_pruning is not None and record.timings["prune_s"] > 0
    else:
        assert record.weight_sparsity == pytest.approx(0.75, abs=1e-4)
        assert [s["step"] for s in record.steps] == [1, 2]
    saved = json.loads((tmp_path / "record.json").read_text())
    assert saved["params"] == record.params and saved["val"] == pytest.approx(record.val)
    loaded = models.load_checkpoint(tmp_path / "model.pt")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    # A finished run is returned as it is; other settings in the same folder are refused.
    again, again_record = compress(teacher, method, reg, train_set=data[0], val_set=data[1], out_dir=tmp_path,
                                   resume=True, device="cpu", progress=False, **FAST, **options)
    assert again_record.to_dict() == saved
    with pytest.raises(CheckpointError, match="other settings"):
        compress(teacher, method, reg, train_set=data[0], out_dir=tmp_path, resume=True, device="cpu",
                 progress=False, **dict(FAST, epochs=2), **options)


def test_iterative_unstructured_resumes_at_the_interrupted_step(tmp_path, data, teacher, monkeypatch):
    options = dict(train_set=data[0], val_set=data[1], device="cpu", progress=False, amount=0.5, steps=2, **FAST)
    reference, _ = compress(teacher, "unstructured", "sswa", out_dir=tmp_path / "a", **options)

    real_fit, calls = api.fit, []

    def interrupted_fit(*args, **kwargs):
        calls.append(kwargs["checkpoint_dir"].name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stop during step 2
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(api, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        compress(teacher, "unstructured", "sswa", out_dir=tmp_path / "b", **options)
    monkeypatch.setattr(api, "fit", lambda *a, **k: (calls.append(k["checkpoint_dir"].name), real_fit(*a, **k))[1])
    resumed, record = compress(teacher, "unstructured", "sswa", out_dir=tmp_path / "b", resume=True, **options)
    assert calls == ["step01", "step02", "step02"]  # step 1 was not redone
    assert [s["step"] for s in record.steps] == [1, 2]
    for (name, p), q in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name


def test_settings_profiles_and_bad_inputs(data, teacher):
    quick = {m: default_settings(m, "quick") for m in ("kd", "structured", "unstructured")}
    assert (quick["kd"].train.epochs, quick["kd"].method_settings.width_divisor) == (8, 2)
    assert (quick["structured"].method_settings.pruning_ratio, quick["structured"].train.epochs) == (0.6, 2)
    assert (quick["unstructured"].final_sparsity, quick["unstructured"].train.epochs) == (pytest.approx(0.9), 2)
    paper = default_settings("structured", "paper")
    pruning = paper.method_settings
    assert (pruning.scheme, pruning.pruning_ratio, paper.train.epochs, paper.train.lr) == ("paper-vgg16", 0.7, 60, 1e-3)
    train = data[0]
    with pytest.raises(UnknownNameError, match="kd, structured, unstructured"):
        compress(teacher, "quantize", train_set=train)
    with pytest.raises(UnknownNameError, match="none, ewa, swa, sswa"):
        compress(teacher, "kd", "gradcam", train_set=train)
    with pytest.raises(ValidationError, match="unknown kd setting 'pruning_ratio'"):
        compress(teacher, "kd", train_set=train, pruning_ratio=0.5)
    with pytest.raises(ValidationError, match="only to method='kd'"):
        compress(teacher, "structured", train_set=train, student=teacher)
    with pytest.raises(ValidationError, match="needs out_dir"):
        compress(teacher, "kd", train_set=train, resume=True)
    with pytest.raises(ValidationError, match="pruning_ratio"):
        compress(teacher, "structured", train_set=train, pruning_ratio=2.0)
    with pytest.raises(UnknownNameError, match="settings profile"):
        compress(teacher, "kd", train_set=train, settings="huge")
    with pytest.raises(ValidationError, match="no distillation"):
        default_settings("kd", "imagenet")
    with pytest.raises(ValidationError, match="teacher must be"):
        compress("teacher.pt", "kd", train_set=train)


def test_cli_compress_writes_model_and_record_and_resumes(tmp_path, monkeypatch, capsys, teacher):
    import apkit.training.pipeline
    from apkit.cli import main

    requested = []

    def fake_from_spec(spec, *, split, **options):  # tiny data instead of rendering the synthetic set
        requested.append((spec, split, options))
        return TinyImages(32 if split == "train" else 16, seed=0 if split == "train" else 1)

    monkeypatch.setattr(apkit.training.pipeline, "from_spec", fake_from_spec)
    models.save_checkpoint(teacher, tmp_path / "teacher.pt")
    args = ["compress", "--teacher", str(tmp_path / "teacher.pt"), "--method", "structured", "--regularizer", "swa",
            "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "16", "--pruning-ratio", "0.5",
            "--weight", "10", "--set", "importance=group_l1", "--device", "cpu", "--quiet"]
    main(args)
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["settings"]["pruning_ratio"] == 0.5 and record["settings"]["weight"] == 10.0
    assert record["settings"]["importance"] == "group_l1" and record["settings"]["epochs"] == 1
    assert f"{record['params']:,} parameters" in out and "model.pt" in out
    assert requested[0] == ("synthetic", "train", {"image_size": 16})
    loaded = models.load_checkpoint(tmp_path / "run" / "model.pt")
    assert models.count_parameters(loaded) == record["params"]
    main(args + ["--resume"])
    assert json.loads((tmp_path / "run" / "record.json").read_text()) == record
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:args.index("--out") + 1], str(tmp_path / "other"), *args[args.index("--out") + 2:],
              "--set", "amount=0.5"])
    assert exit_info.value.code == 1
    assert "unknown structured setting 'amount'" in capsys.readouterr().err


def _plain_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3)).eval()


@pytest.mark.parametrize("method,options", [("unstructured", dict(amount=0.5)),
                                            ("structured", dict(pruning_ratio=0.5))])
def test_finished_run_of_a_model_apkit_did_not_build_is_recognised(tmp_path, data, monkeypatch, method, options):
    """Such a model is saved as model_state.pt: --resume loads it, and a rerun without it is refused."""
    teacher = _plain_cnn()
    run = dict(train_set=data[0], val_set=data[1], out_dir=tmp_path, device="cpu", progress=False, **FAST, **options)
    model, record = compress(teacher, method, **run)
    assert (tmp_path / "model_state.pt").is_file() and not (tmp_path / "model.pt").exists()
    monkeypatch.setattr(api, "fit", lambda *a, **k: pytest.fail("a finished run must not train again"))
    again, again_record = compress(teacher, method, resume=True, **run)
    assert again_record.to_dict() == record.to_dict() and not again.training
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(again(x), model(x), atol=1e-6)
    with pytest.raises(ValidationError, match="already holds a finished compression"):
        compress(teacher, method, **run)


def test_a_bad_task_is_named(data, teacher):
    train = TinyImages(16)
    train.task = "regression"
    with pytest.raises(UnknownNameError, match="unknown task 'regression'; choose one of: multilabel, multiclass"):
        compress(teacher, "kd", train_set=train, device="cpu", progress=False, **FAST)


def test_run_options_and_settings_overrides_are_told_apart(data, teacher):
    options, overrides = api.RunOptions.split({"seed": 3, "device": "cpu", "epochs": 2, "weight": 5})
    assert (options.seed, options.device, options.resume) == (3, "cpu", False)
    assert overrides == {"epochs": 2, "weight": 5}
    with pytest.raises(ValidationError, match="seed must be >= 0"):
        compress(teacher, "kd", train_set=data[0], seed=-1, **FAST)
