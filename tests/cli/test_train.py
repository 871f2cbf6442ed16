"""The command line: `apkit train` end to end, and bad input as one-line errors with exit code 1."""

import json

import torch
from helpers import run_cli

from apkit.models import load_checkpoint


def assert_one_line_error(code, err, *fragments, layout=False):
    """Exit code 1 and one ``apkit: error:`` line naming the problem, no traceback.

    With ``layout``, the line may be followed by the expected folder layout (data-root errors).
    """
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith("apkit: error: ") and err.count("apkit: error:") == 1, err
    assert len(lines) == 1 or layout, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


SMALL = ["--train-samples", 64, "--val-samples", 32, "--image-size", 32, "--device", "cpu", "--quiet"]


def test_train_writes_model_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", "--out", out, "--epochs", 2, "--batch-size", 16, *SMALL], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    model = load_checkpoint(out / "model.pt", expect_arch="vgg_small", expect_num_classes=8)
    assert model.apkit_config["options"]["input_size"] == 32
    meta = model.apkit_meta
    assert meta["dataset"] == "synthetic" and meta["metrics"] == metrics["val"] and meta["task"] == "multilabel"
    assert metrics["settings"]["epochs"] == 2 and metrics["settings"]["recipe"] == "synthetic"
    assert metrics["best_epoch"] == 1 + max(range(2), key=lambda i: metrics["history"][i]["val_map_class"])
    assert f"map_class {metrics['val']['map_class']:.4f}" in stdout and "wrote" in stdout
    # Resuming a finished run trains nothing and reports the same result.
    code, again, _ = run_cli(["train", "--out", out, "--epochs", 2, "--batch-size", 16, "--resume", *SMALL], capsys)
    assert code == 0 and json.loads((out / "metrics.json").read_text())["val"] == metrics["val"]
    assert again.splitlines()[0].split("(")[0] == stdout.splitlines()[0].split("(")[0]


def test_help_lists_the_recipes(capsys):
    code, stdout, _ = run_cli(["train", "--help"], capsys)
    assert code == 0 and "teacher-supp" in stdout and "--resume" in stdout


def test_unknown_model(tmp_path, capsys):
    code, _, err = run_cli(["train", "--model", "vgg17", "--out", tmp_path], capsys)
    assert_one_line_error(code, err, "unknown model 'vgg17'", "vgg_small")


def test_unknown_recipe_and_bad_values(tmp_path, capsys):
    code, _, err = run_cli(["train", "--recipe", "fast", "--out", tmp_path, *SMALL], capsys)
    assert_one_line_error(code, err, "unknown training recipe 'fast'", "teacher")
    code, _, err = run_cli(["train", "--epochs", 0, "--out", tmp_path, *SMALL], capsys)
    assert_one_line_error(code, err, "epochs must be >= 1")
    code, _, err = run_cli(["train", "--milestones", "ten", "--out", tmp_path, *SMALL], capsys)
    assert_one_line_error(code, err, "--milestones")


def test_missing_data_root(tmp_path, capsys):
    code, _, err = run_cli(["train", "--data", f"voc:{tmp_path / 'absent'}", "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "absent", layout=True)
    assert "ImageSets/Main/train.txt" in err  # the layout says what to put there
    assert not (tmp_path / "o").exists()  # nothing written


def test_incomplete_data_root(tmp_path, capsys):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)  # no annotations, no image lists
    code, _, err = run_cli(["train", "--data", f"voc:{tmp_path}", "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "missing", layout=True)


def _training_checkpoint(out):
    path = out / "training" / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    return path


def test_corrupt_checkpoint(tmp_path, capsys):
    _training_checkpoint(tmp_path).write_bytes(b"\x00 this is not a checkpoint")
    code, _, err = run_cli(["train", "--out", tmp_path, "--resume", *SMALL], capsys)
    assert_one_line_error(code, err, "corrupt")
    code, _, err = run_cli(["audit", "--teacher", tmp_path / "training" / "checkpoint.pt", "--student",
                        tmp_path / "training" / "checkpoint.pt", "--out", tmp_path / "audit"], capsys)
    assert_one_line_error(code, err, "corrupt")


class _RunsCode:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):  # unpickling would call open(path, "w"), creating the file
        return (open, (self.path, "w"))


def test_code_running_pickle_is_refused(tmp_path, capsys):
    marker = tmp_path / "created-by-unpickling"
    torch.save({"format": "apkit-training-state", "payload": _RunsCode(marker)}, _training_checkpoint(tmp_path))
    code, _, err = run_cli(["train", "--out", tmp_path, "--resume", *SMALL], capsys)
    assert_one_line_error(code, err, "could run code")
    code, _, err = run_cli(["audit", "--teacher", tmp_path / "training" / "checkpoint.pt", "--student",
                        tmp_path / "training" / "checkpoint.pt", "--out", tmp_path / "audit"], capsys)
    assert_one_line_error(code, err, "could run code")
    assert not marker.exists()
