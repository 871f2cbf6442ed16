"""The catalogue of bad inputs: each one stops at the door with one clear apkit error, never a traceback.

Three sections, one parametrised test each:

* **CLI**: ``apkit ...`` exits with 1 and one ``apkit: error: ...`` line on stderr that names the
  problem (2 and one click ``Error:`` line for a click usage error), no traceback; a refused
  command leaves no output folder behind.
* **API**: the same checks reached from Python raise the named :class:`~apkit.core.errors.ApkitError`
  subclass, with a message that names the problem and the fix.
* **No overwrite**: a refused run leaves the files of the previous run as they were.
* **Hostile and unlucky inputs**: run folders of other runs, interrupted runs, changed inputs on resume,
  zip-bomb checkpoints, absurd configs, decompression-bomb images and masks, all-zero masks, factory specs
  that exit or return no model, and unclear errors: one line each, every folder left as it was; an audit
  with hostile class and file names writes escaped Markdown and CSV.  Full disks are in test_full_disk.py.

The fixtures are tiny (untrained 32-pixel vgg_small/8 checkpoints, 32 synthetic training images);
one fixture trains for one tiny epoch, for the resume cases.  Every refusal happens before any
training starts, so the CLI section runs in seconds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch

import apkit
from apkit import models
from apkit.bench import resolve_profile
from apkit.bench.profiles import validate_profile
from apkit.bench.runner import run_bench
from apkit.cli import main
from apkit.compression import compress, compress_checkpoint, default_settings
from apkit.core.errors import ApkitError, CheckpointError, DataError, UnknownNameError, ValidationError
from apkit.core.io import atomic_write, atomic_write_json
from apkit.data import from_spec
from apkit.metrics import pointing_game, roc_auc
from apkit.training import Recipe, fit, train_model

pytestmark = pytest.mark.usefixtures("one_thread")

# A folder no one can create: /proc takes no new entries, even from root.
UNWRITABLE = "/proc/apkit-no-such-folder/out"
needs_proc = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")

TINY = dict(num_classes=8, input_size=32, width_divisor=8)
# A command that has to start: tiny synthetic data, one short epoch (no case gets that far).
TRAIN = ["--train-samples", "32", "--val-samples", "16", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
         "--quiet"]
TRAIN_CMD = ["train", "--image-size", "32", "--width-divisor", "8", *TRAIN]
AUDIT = ["--samples", "8", "--batch-size", "8", "--device", "cpu", "--quiet"]


class _RunsCode:
    """Unpickling this object would call ``open(path, "w")``: it creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every file a case names: good, broken and foreign checkpoints, finished runs, a benchmark folder."""
    root = tmp_path_factory.mktemp("bad-inputs")
    paths = {"root": root, "unwritable": UNWRITABLE}
    teacher = models.create("vgg_small", **TINY)
    paths["teacher"] = models.save_checkpoint(teacher, root / "teacher.pt")
    paths["five"] = models.save_checkpoint(models.create("vgg_small", **{**TINY, "num_classes": 5}), root / "five.pt")

    good = paths["teacher"].read_bytes()
    (root / "corrupt.pt").write_bytes(b"PK\x03\x04 these are not the bytes of a checkpoint" * 4)
    (root / "truncated.pt").write_bytes(good[: len(good) // 2])
    torch.save({"format": "apkit-checkpoint", "config": _RunsCode(root / "code-ran")}, root / "evil.pt")
    (root / "evil-pickle.pt").write_bytes(pickle.dumps(_RunsCode(root / "code-ran")))
    payload = torch.load(paths["teacher"], weights_only=True)
    torch.save({**payload, "format_version": 99}, root / "v99.pt")
    # The weights of a wider model under this one's recipe: every conv is too large.
    wide = models.create("vgg_small", **{**TINY, "width_divisor": 4}).state_dict()
    torch.save({**payload, "state_dict": wide}, root / "misfit.pt")
    torch.save({k: v for k, v in payload.items() if k != "config"}, root / "no-config.pt")
    for name in ("corrupt", "truncated", "evil", "evil-pickle", "v99", "misfit", "no-config"):
        paths[name] = root / f"{name}.pt"

    # A finished compression: what compress leaves behind (record.json and model.pt).
    finished = root / "compressed"
    models.save_checkpoint(teacher, finished / "model.pt")
    atomic_write_json(finished / "record.json", {"method": "kd", "regularizer": "none", "finished": True})
    paths["compressed"] = finished

    # A finished training run of one tiny epoch (model.pt, metrics.json and the resumable checkpoint).
    paths["trained"] = root / "trained"
    train_model("vgg_small", out_dir=paths["trained"], overrides={"epochs": 1, "batch_size": 16},
                model_options={"width_divisor": 8}, data_options={"image_size": 32}, train_samples=32,
                val_samples=16, device="cpu", progress=False)

    # A benchmark folder as run_bench starts it: its settings.json.
    bench = root / "bench"
    settings = {**resolve_profile("smoke"), "profile": "smoke"}
    atomic_write_json(bench / "settings.json", settings)
    paths["bench"] = bench
    return paths


# ------------------------------------------------------------------------------------------------- CLI

def _run_cli(argv, capsys):
    """Run ``apkit ARGV`` in this process; return (exit code, stderr).  Any exception is a failure."""
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:  # noqa: BLE001 - the CLI must turn every bad input into an exit code
        pytest.fail(f"apkit {' '.join(map(str, argv))} raised {type(exc).__name__}: {exc}")
    return code, capsys.readouterr().err


# Each case: (id, argv with {name} for a path of `files` and {out} for a fresh folder, fragments the error
# line must hold, kind).  kind: "error" (exit 1, one line), "layout" (exit 1, one error line followed by the
# expected folder layout), "usage" (a click usage error: exit 2, one "Error:" line).
CLI_CASES = [
    # 1. bench --set values are checked, every compression's included, before anything runs or is written.
    ("bench-pruning-ratio", ["bench", "--profile", "smoke", "--out", "{out}", "--quiet", "--device", "cpu",
                             "--set", "compressions.structured.pruning_ratio=1.5"],
     ["compressions.structured", "pruning_ratio must be < 1.0, got 1.5"], "error"),
    ("bench-teacher-epochs", ["bench", "--profile", "smoke", "--out", "{out}", "--set",
                              "teachers.teacher.train.epochs=0"],
     ["teachers.teacher.train", "epochs must be >= 1, got 0"], "error"),
    ("bench-regularizer-weight", ["bench", "--profile", "smoke", "--out", "{out}", "--set",
                                  "regularizer_options.swa.weight=-1"],
     ["regularizer_options.swa", "weight must be >= 0.0, got -1"], "error"),
    ("bench-weight-on-naive", ["bench", "--profile", "smoke", "--out", "{out}", "--set", "compressions.kd.weight=5"],
     ["compressions.kd.weight is a regularizer setting", "regularizer_options.swa.weight"], "error"),
    ("bench-tolerances", ["bench", "--profile", "smoke", "--out", "{out}", "--set", "evaluation.tolerances=[-1]"],
     ["evaluation.tolerances", "must be >= 0, got -1"], "error"),
    ("bench-seeds-empty", ["bench", "--profile", "smoke", "--out", "{out}", "--set", "seeds=[]"],
     ["seeds must be a non-empty list"], "error"),
    ("bench-seeds-repeated", ["bench", "--profile", "smoke", "--out", "{out}", "--set", "seeds=[0, 0]"],
     ["seeds must not repeat", "[0, 0]"], "error"),
    ("bench-unknown-method", ["bench", "--profile", "smoke", "--out", "{out}", "--set",
                              'evaluation.attribution_methods=["gradcm"]'],
     ["unknown attribution method 'gradcm'", "did you mean gradcam"], "error"),
    ("bench-unknown-regularizer", ["bench", "--profile", "smoke", "--out", "{out}", "--set", 'regularizers=["swaa"]'],
     ["unknown regularizer 'swaa'", "did you mean swa"], "error"),
    ("bench-roar-source", ["bench", "--profile", "smoke", "--out", "{out}", "--set", 'roar.sources=["kd-sw"]'],
     ["unknown ROAR source 'kd-sw'", "did you mean kd-swa"], "error"),
    ("bench-missing-checkpoint", ["bench", "--profile", "smoke", "--out", "{out}", "--set",
                                  "teachers.teacher.checkpoint={root}/no-such.pt"],
     ["teachers.teacher.checkpoint", "does not exist"], "error"),
    # 2. An unwritable output folder, before any work, in every command.
    ("train-unwritable", [*TRAIN_CMD, "--out", "{unwritable}"], ["cannot write", UNWRITABLE, "pick another"], "error"),
    ("compress-unwritable", ["compress", "--teacher", "{teacher}", "--out", "{unwritable}", *TRAIN],
     ["cannot write", UNWRITABLE, "pick another"], "error"),
    ("bench-unwritable", ["bench", "--profile", "smoke", "--out", "{unwritable}", "--quiet"],
     ["cannot write", UNWRITABLE, "pick another"], "error"),
    ("audit-unwritable", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--out", "{unwritable}",
                          *AUDIT], ["cannot write", UNWRITABLE, "pick another"], "error"),
    ("train-out-under-a-file", [*TRAIN_CMD, "--out", "{teacher}/run"], ["a file", "pick another"], "error"),
    ("train-out-is-a-file", [*TRAIN_CMD, "--out", "{teacher}"], ["--out", "is a file"], "usage"),
    # 3. Unknown sections and keys list the valid ones, close matches first.
    ("bench-unknown-section", ["bench", "--profile", "smoke", "--out", "{out}", "--set", "teacher.train.epochs=5"],
     ["unknown section 'teacher'", "sections here: teachers,"], "error"),
    ("bench-unknown-key", ["bench", "--profile", "smoke", "--out", "{out}", "--set",
                           "teachers.teacher.train.epoch=5"], ["unknown setting 'epoch'", "known: epochs,"], "error"),
    ("bench-unknown-compression-key", ["bench", "--profile", "smoke", "--out", "{out}", "--set",
                                       "compressions.kd.epochz=5"],
     ["compressions.kd", "epochz", "did you mean epochs?"], "error"),
    ("compress-unknown-setting", ["compress", "--teacher", "{teacher}", "--out", "{out}", "--set", "epochz=1", *TRAIN],
     ["unknown kd setting 'epochz'", "did you mean epochs?"], "error"),
    # 4. What was silently accepted.
    ("audit-no-methods", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--out", "{out}",
                          "--methods", "", *AUDIT], ["--methods must name at least one"], "error"),
    ("compress-naive-weight", ["compress", "--teacher", "{teacher}", "--out", "{out}", "--regularizer", "none",
                               "--weight", "50", *TRAIN],
     ["regularizer 'none'", "weight=50.0", "choose a regularizer"], "error"),
    ("compress-old-option-spelling", ["compress", "--teacher", "{teacher}", "--out", "{out}", "--reg", "none", *TRAIN],
     ["No such option", "--reg"], "usage"),
    ("compress-naive-drop", ["compress", "--teacher", "{teacher}", "--out", "{out}", "--drop", "0.3", *TRAIN],
     ["regularizer 'none'", "drop=0.3"], "error"),
    ("audit-format-99", ["audit", "--teacher", "{v99}", "--student", "{teacher}", "--out", "{out}", *AUDIT],
     ["newer apkit (format 99)", "reads format 1", "upgrade apkit"], "error"),
    ("compress-finished", ["compress", "--teacher", "{teacher}", "--out", "{compressed}", *TRAIN],
     ["already holds a finished compression", "--resume", "--overwrite", "another out_dir (--out)"], "error"),
    ("train-finished", [*TRAIN_CMD, "--out", "{trained}"],
     ["already holds a trained model", "--resume", "--overwrite"], "error"),
    ("compress-resume-and-overwrite", ["compress", "--teacher", "{teacher}", "--out", "{compressed}", "--resume",
                                       "--overwrite", *TRAIN], ["resume and overwrite exclude each other"], "error"),
    # 5. Raw or unclear errors made clear.
    ("audit-misfit-checkpoint", ["audit", "--teacher", "{misfit}", "--student", "{teacher}", "--out", "{out}",
                                 *AUDIT],
     ["does not fit its architecture 'vgg_small'",
      "features.0.weight is (4, 3, 3, 3) in the file but (2, 3, 3, 3) in the model", "re-create it"], "error"),
    ("audit-class-count", ["audit", "--teacher", "{teacher}", "--student", "{five}", "--out", "{out}", *AUDIT],
     ["five.pt' has 5 classes but the data has 8", "use a checkpoint trained on this dataset"], "error"),
    ("bench-voc-without-root", ["bench", "--profile", "voc", "--out", "{out}"],
     ["--data-root DIR", "VOCdevkit/VOC2012"], "error"),
    ("bench-voc-missing-root", ["bench", "--profile", "voc", "--out", "{out}", "--data-root", "{root}/no-voc"],
     ["is not a folder", "VOCdevkit/VOC2012"], "error"),
    ("train-resume-changed", [*TRAIN_CMD, "--out", "{trained}", "--resume", "--lr", "0.5"],
     ["settings changed", "lr", "--overwrite"], "error"),
    # Already clear: broken and unsafe checkpoints, unknown names, numbers out of range, missing folders.
    ("audit-corrupt", ["audit", "--teacher", "{corrupt}", "--student", "{teacher}", "--out", "{out}", *AUDIT],
     ["corrupt", "re-create it"], "error"),
    ("audit-truncated", ["audit", "--teacher", "{truncated}", "--student", "{teacher}", "--out", "{out}", *AUDIT],
     ["corrupt", "re-create it"], "error"),
    ("audit-code-running", ["audit", "--teacher", "{evil}", "--student", "{teacher}", "--out", "{out}", *AUDIT],
     ["refused", "could run code"], "error"),
    ("audit-code-running-pickle", ["audit", "--teacher", "{teacher}", "--student", "{evil-pickle}", "--out", "{out}",
                                   *AUDIT], ["refused", "could run code"], "error"),
    ("audit-missing-checkpoint", ["audit", "--teacher", "{root}/no-such.pt", "--student", "{teacher}", "--out",
                                  "{out}", *AUDIT], ["does not exist"], "error"),
    ("train-unknown-model", [*TRAIN_CMD, "--model", "vgg_smal", "--out", "{out}"],
     ["unknown model 'vgg_smal'", "vgg_small"], "error"),
    ("audit-unknown-method", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--out", "{out}",
                              "--methods", "gradcm", *AUDIT], ["unknown attribution method 'gradcm'", "gradcam"],
     "error"),
    ("train-unknown-dataset", [*TRAIN_CMD, "--data", "nope", "--out", "{out}"],
     ["unknown dataset 'nope'", "synthetic"], "error"),
    ("bench-unknown-profile", ["bench", "--profile", "nope", "--out", "{out}"], ["--profile", "'nope'"], "usage"),
    ("compress-unknown-regularizer", ["compress", "--teacher", "{teacher}", "--out", "{out}", "--regularizer",
                                      "swaa", *TRAIN], ["--regularizer", "'swaa'"], "usage"),
    ("compress-pruning-ratio", ["compress", "--teacher", "{teacher}", "--out", "{out}", "--method", "structured",
                                "--pruning-ratio", "1.5", *TRAIN], ["pruning_ratio must be < 1.0, got 1.5"], "error"),
    ("compress-negative-weight", ["compress", "--teacher", "{teacher}", "--out", "{out}", "--regularizer", "swa",
                                  "--weight", "-1", *TRAIN], ["weight must be >= 0.0, got -1"], "error"),
    ("train-zero-epochs", [*TRAIN_CMD, "--epochs", "0", "--out", "{out}"], ["epochs must be >= 1, got 0"], "error"),
    ("audit-negative-tolerance", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--out", "{out}",
                                  "--tolerances=-1", *AUDIT], ["tolerances", ">= 0", "-1"], "error"),
    ("train-missing-voc", ["train", "--data", "voc:{root}/no-voc", "--out", "{out}", "--device", "cpu", "--quiet"],
     ["VOC root", "is not a folder"], "layout"),
    ("audit-missing-folder", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--data",
                              "folder:{root}/no-images", "--out", "{out}", "--device", "cpu", "--quiet"],
     ["no-images"], "layout"),
]


def _argv(template, files, out):
    values = {k: str(v) for k, v in files.items()} | {"out": str(out)}
    return [part.format(**values) for part in template]


def _check_stderr(code, err, fragments, kind):
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    if kind == "usage":  # click's own format: usage, a hint, then one "Error:" line
        assert code == 2, err
        errors = [line for line in lines if line.startswith("Error: ")]
        assert len(errors) == 1, err
        line = errors[0]
    else:
        assert code == 1, err
        assert lines and lines[0].startswith("apkit: error: ") and err.count("apkit: error:") == 1, err
        assert len(lines) == 1 or kind == "layout", err
        line = lines[0]
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


@pytest.mark.parametrize("template, fragments, kind", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_bad_input_in_one_line(files, tmp_path, capsys, template, fragments, kind):
    out = tmp_path / "out"
    code, err = _run_cli(_argv(template, files, out), capsys)
    _check_stderr(code, err, fragments, kind)
    assert not out.exists(), "a refused command must not leave an output folder"
    assert not (files["root"] / "code-ran").exists()


def test_cli_messages_stay_short(files, tmp_path, capsys):
    """A checkpoint that does not fit names a few tensors, not every key (it printed kilobytes)."""
    code, err = _run_cli(_argv(["audit", "--teacher", "{misfit}", "--student", "{teacher}", "--out", "{out}", *AUDIT],
                               files, tmp_path / "out"), capsys)
    line = _check_stderr(code, err, ["tensors differ"], "error")
    assert len(line) < 600, line


def test_cli_voc_without_root_does_not_suggest_a_spec(files, tmp_path, capsys):
    """bench takes --data-root, not the voc:ROOT spelling of the other commands."""
    code, err = _run_cli(["bench", "--profile", "voc", "--out", str(tmp_path / "out")], capsys)
    line = _check_stderr(code, err, ["--data-root DIR"], "error")
    assert "voc:" not in line


def test_cli_resume_message_does_not_name_the_api(files, tmp_path, capsys):
    code, err = _run_cli(_argv([*TRAIN_CMD, "--out", "{trained}", "--resume", "--lr", "0.5"], files, tmp_path), capsys)
    line = _check_stderr(code, err, ["--overwrite (instead of --resume) on the command line"], "error")
    assert "another checkpoint_dir" not in line


def test_bench_help_example_is_accepted():
    """The example of `apkit bench --help` is a valid override."""
    validate_profile(resolve_profile("smoke", ["teachers.teacher.train.epochs=5"]))


# ------------------------------------------------------------------------------------------------- API

def _dataset(split="seg", n=8):
    return from_spec("synthetic", split=split, num_samples=n, image_size=32)


def _net(**options):
    return models.create("vgg_small", **{**TINY, **options})


def _compress(regularizer="none", **options):
    return lambda f: compress(_net(), "kd", regularizer, train_set=_dataset("train", 16), device="cpu",
                              progress=False, **options)


def _load(name):
    return lambda f: models.load_checkpoint(f[name])


def _train(**options):
    return lambda f: train_model("vgg_small", **{"out_dir": f["root"] / "never", "train_samples": 32,
                                                 "val_samples": 16, "device": "cpu", "progress": False, **options})


def _maps(nan=False):
    maps = torch.rand(2, 8, 8)
    if nan:
        maps[0, 0, 0] = float("nan")
    return maps


def _masks(value=1, size=8):
    masks = torch.zeros(2, size, size, dtype=torch.long)
    masks[:, 2:4, 2:4] = value
    return masks


def _fit_resume_changed(f):
    train = _dataset("train", 32)
    fit(_net(), train, Recipe(epochs=1, batch_size=16, lr=0.5), checkpoint_dir=f["trained"] / "training",
        resume=True, device="cpu", progress=False)


def _old_setting_name(f):
    _compress(settings={"profile": "quick", "reg_weight": 50})(f)


def _disk_full(handle):
    raise OSError(errno.ENOSPC, "No space left on device")


# Each case: (id, call taking `files`, the ApkitError subclass, fragments: the problem and the fix).
API_CASES = [
    # 1. The whole resolved profile is checked up front.
    ("validate-pruning-ratio",
     lambda f: validate_profile(resolve_profile("smoke", ["compressions.structured.pruning_ratio=1.5"])),
     ValidationError, ["compressions.structured", "pruning_ratio must be < 1.0, got 1.5"]),
    ("validate-kd-temperature",
     lambda f: validate_profile(resolve_profile("smoke", ["compressions.kd.temperature=0"])),
     ValidationError, ["compressions.kd", "temperature must be > 0.0"]),
    ("validate-roar-train",
     lambda f: validate_profile(resolve_profile("smoke", ["roar.train.batch_size=0"])),
     ValidationError, ["roar.train", "batch_size must be >= 1"]),
    ("validate-primary-not-evaluated",
     lambda f: validate_profile(resolve_profile("smoke", ['evaluation.attribution_methods=["lrp"]'])),
     ValidationError, ["evaluation.primary must be one of", "add it there"]),
    ("run-bench-pruning-ratio",
     lambda f: run_bench("smoke", out_dir=f["root"] / "never", overrides=["compressions.unstructured.amount=1"],
                         progress=False),
     ValidationError, ["compressions.unstructured", "amount must be < 1.0"]),
    # 2. Unwritable folders and failed writes.
    ("save-checkpoint-unwritable", lambda f: models.save_checkpoint(_net(), f"{UNWRITABLE}/m.pt"),
     ValidationError, ["cannot write", UNWRITABLE, "pick another output folder"]),
    ("atomic-write-disk-full", lambda f: atomic_write(f["root"] / "full.json", _disk_full),
     ValidationError, ["cannot write", "full.json", "free some disk space"]),
    ("train-model-unwritable", _train(out_dir=UNWRITABLE), ValidationError, ["cannot write", "pick another"]),
    ("compress-unwritable", _compress(out_dir=UNWRITABLE), ValidationError, ["cannot write", "pick another"]),
    ("run-bench-unwritable", lambda f: run_bench("smoke", out_dir=UNWRITABLE, progress=False),
     ValidationError, ["cannot write", "pick another"]),
    # 3. Unknown sections and keys.
    ("resolve-unknown-section", lambda f: resolve_profile("smoke", ["teacher.train.epochs=5"]),
     ValidationError, ["unknown section 'teacher'", "sections here: teachers,"]),
    ("resolve-unknown-key", lambda f: resolve_profile("smoke", ["evaluation.tolerance=[0]"]),
     ValidationError, ["unknown setting 'tolerance'", "known: tolerances,"]),
    # 4. What was silently accepted.
    ("compress-naive-weight", _compress(weight=50), ValidationError, ["regularizer 'none'", "weight=50", "drop them"]),
    ("compress-old-setting-name", _old_setting_name, ValidationError, ["reg_weight", "weight"]),
    ("compress-naive-settings-object", _compress(settings=default_settings("kd", teacher_layer="features.1")),
     ValidationError, ["regularizer 'none'", "teacher_layer='features.1'"]),
    ("compress-checkpoint-naive-weight",
     lambda f: compress_checkpoint(f["root"] / "no-such.pt", "kd", "none", out_dir=f["root"] / "never",
                                   options={"weight": 50}),
     ValidationError, ["regularizer 'none'", "weight=50"]),
    ("compress-finished", lambda f: _compress(out_dir=f["compressed"])(f),
     ValidationError, ["already holds a finished compression", "resume=True", "overwrite=True"]),
    ("compress-resume-and-overwrite", _compress(out_dir="x", resume=True, overwrite=True),
     ValidationError, ["resume and overwrite exclude each other"]),
    ("train-model-finished", lambda f: _train(out_dir=f["trained"])(f),
     ValidationError, ["already holds a trained model", "resume=True", "overwrite=True"]),
    ("checkpoint-format-99", _load("v99"), CheckpointError, ["newer apkit (format 99)", "upgrade apkit"]),
    ("audit-no-students", lambda f: apkit.audit(_net(), {}, _dataset(), progress=False),
     ValidationError, ["students is empty", "pass at least one"]),
    ("audit-no-students-list", lambda f: apkit.audit(_net(), [], _dataset(), progress=False),
     ValidationError, ["students is empty", "pass at least one"]),
    ("audit-negative-tolerance",
     lambda f: apkit.audit(_net(), _net(), _dataset(), tolerances=[0, -1], progress=False),
     ValidationError, ["tolerances must be >= 0, got -1"]),
    ("audit-negative-tolerance-api",
     lambda f: apkit.audit(_net(), _net(), _dataset(), tolerances=[0, -1], progress=False),
     ValidationError, ["tolerances must be >= 0, got -1"]),
    ("audit-no-methods", lambda f: apkit.audit(_net(), _net(), _dataset(), attribution_methods=[], progress=False),
     ValidationError, ["attribution_methods is empty", "name at least one"]),
    # 5. Raw or unclear errors made clear.
    ("checkpoint-misfit", _load("misfit"), CheckpointError,
     ["does not fit its architecture", "features.0.weight is (4, 3, 3, 3) in the file", "re-create it"]),
    ("audit-class-count", lambda f: apkit.audit(_net(), _net(num_classes=5), _dataset(), progress=False),
     ValidationError, ["5 outputs", "8 classes", "data of its own classes"]),
    ("run-bench-voc-without-root", lambda f: run_bench("voc", out_dir=f["root"] / "never", progress=False),
     DataError, ["--data-root DIR", "data_root=DIR", "VOCdevkit/VOC2012"]),
    ("fit-resume-changed", _fit_resume_changed, CheckpointError,
     ["settings changed", "lr", "resume=False in Python", "--overwrite (instead of --resume) on the command line"]),
    # Already clear.
    ("checkpoint-corrupt", _load("corrupt"), CheckpointError, ["corrupt", "re-create it"]),
    ("checkpoint-truncated", _load("truncated"), CheckpointError, ["corrupt", "re-create it"]),
    ("checkpoint-code-running", _load("evil"), CheckpointError, ["could run code", "save only its state_dict"]),
    ("checkpoint-without-config", _load("no-config"), CheckpointError, ["lacks its architecture", "re-create it"]),
    ("checkpoint-missing", lambda f: models.load_checkpoint(f["root"] / "no-such.pt"),
     CheckpointError, ["does not exist", "check the path"]),
    ("unknown-model", lambda f: models.create("vgg_smal", num_classes=8), UnknownNameError,
     ["unknown model 'vgg_smal'", "vgg_small"]),
    # 6. Inputs the model cannot take are refused before any pass, not by a raw RuntimeError after it.
    ("explain-float16", lambda f: apkit.explain(_net(), torch.rand(1, 3, 32, 32).half(), 0), ValidationError,
     ["inputs are torch.float16", "weights are torch.float32", "inputs.to(torch.float32)"]),
    ("explain-other-device", lambda f: apkit.explain(_net().to("meta"), torch.rand(1, 3, 32, 32), 0),
     ValidationError, ["inputs are on cpu but the model is on meta", "move both to one device"]),
    ("unknown-attribution-method", lambda f: apkit.explain(_net(), torch.rand(1, 3, 32, 32), 0, method="gradcm"),
     UnknownNameError, ["unknown attribution method 'gradcm'", "gradcam"]),
    ("unknown-dataset", lambda f: from_spec("nope", split="seg"), UnknownNameError,
     ["unknown dataset 'nope'", "synthetic"]),
    ("unknown-profile", lambda f: resolve_profile("nope"), UnknownNameError, ["unknown bench profile 'nope'", "smoke"]),
    ("unknown-regularizer", _compress("swaa"), UnknownNameError, ["unknown regularizer 'swaa'", "swa"]),
    ("pruning-ratio-out-of-range",
     lambda f: compress(_net(), "structured", train_set=_dataset("train", 16), pruning_ratio=1.5, progress=False),
     ValidationError, ["pruning_ratio must be < 1.0, got 1.5"]),
    ("zero-epochs", _train(overrides={"epochs": 0}), ValidationError, ["epochs must be >= 1, got 0"]),
    ("negative-weight", _compress("swa", weight=-1), ValidationError, ["weight must be >= 0.0, got -1"]),
    ("negative-compression-seed",
     lambda f: validate_profile(resolve_profile("smoke", ["compressions.structured.seeds=[0, -1]"])),
     ValidationError, ["compressions.structured.seeds", "each training seed must be >= 0, got -1"]),
    ("negative-tolerance", lambda f: validate_profile(resolve_profile("smoke", ["evaluation.tolerances=[-1]"])),
     ValidationError, ["tolerance must be >= 0, got -1"]),
    ("missing-voc-folder", lambda f: from_spec(f"voc:{f['root']}/no-voc", split="val"), DataError,
     ["is not a folder", "expected this layout"]),
    ("nan-maps", lambda f: roc_auc(_maps(nan=True), _masks().bool()), ValidationError,
     ["free of NaN", "drop those maps"]),
    ("nan-maps-pointing", lambda f: pointing_game(_maps(nan=True), _masks().bool()), ValidationError,
     ["free of NaN", "drop those maps"]),
    ("non-binary-masks", lambda f: roc_auc(_maps(), _masks(value=2)), ValidationError,
     ["masks must be binary", "mask == class_id + 1"]),
    ("shape-mismatch", lambda f: roc_auc(_maps(), _masks(size=4).bool()), ValidationError,
     ["must have the same shape", "(2, 8, 8) and (2, 4, 4)"]),
]


@pytest.mark.parametrize("call, error, fragments", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_raises_the_named_error(files, call, error, fragments):
    with pytest.raises(ApkitError) as info:
        call(files)
    assert isinstance(info.value, error), f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert "\n" not in message.split("expected this layout")[0], message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not (files["root"] / "never").exists(), "a refused call must not leave an output folder"
    assert not Path(UNWRITABLE).parent.exists()
    assert not (files["root"] / "code-ran").exists()


# ------------------------------------------------------------------------------------------- no overwrite

def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# Each case: (id, the folder of `files` a previous run left, the refused command); the folder must be unchanged.
NO_OVERWRITE_CASES = [
    ("bench-refused-set", "bench", ["bench", "--profile", "smoke", "--out", "{bench}", "--quiet", "--set",
                                    "compressions.structured.pruning_ratio=1.5"]),
    ("bench-unknown-section", "bench", ["bench", "--profile", "smoke", "--out", "{bench}", "--set",
                                        "teacher.train.epochs=5"]),
    ("compress-rerun-without-resume", "compressed", ["compress", "--teacher", "{teacher}", "--out", "{compressed}",
                                                     *TRAIN]),
    ("compress-rerun-naive-weight", "compressed", ["compress", "--teacher", "{teacher}", "--out", "{compressed}",
                                                   "--resume", "--weight", "50", *TRAIN]),
    ("train-rerun-without-resume", "trained", [*TRAIN_CMD, "--out", "{trained}"]),
    ("train-rerun-changed-settings", "trained", [*TRAIN_CMD, "--out", "{trained}", "--resume", "--lr", "0.5"]),
]


@pytest.mark.parametrize("folder, template", [c[1:] for c in NO_OVERWRITE_CASES],
                         ids=[c[0] for c in NO_OVERWRITE_CASES])
def test_refused_rerun_overwrites_nothing(files, tmp_path, capsys, folder, template):
    before = _snapshot(files[folder])
    code, err = _run_cli(_argv(template, files, tmp_path / "out"), capsys)
    assert code == 1 and "Traceback" not in err and err.count("apkit: error:") == 1, err
    assert _snapshot(files[folder]) == before


def test_refused_bench_run_writes_no_settings(tmp_path, capsys):
    """The bad value is not saved: the corrected rerun in the same folder is then accepted."""
    out = tmp_path / "bench"
    code, err = _run_cli(["bench", "--profile", "smoke", "--out", out, "--set",
                          "compressions.structured.pruning_ratio=1.5"], capsys)
    assert code == 1, err
    assert not (out / "settings.json").exists()
    validate_profile(resolve_profile("smoke", ["compressions.structured.pruning_ratio=0.5"]))


def test_compress_overwrite_is_explicit(files, tmp_path):
    """``overwrite=True`` passes the finished-folder check (the run itself is not started here)."""
    from apkit.compression.api import check_compression_out_dir as check_out_dir

    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("record.json", "model.pt"):
        (copy / name).write_bytes((files["compressed"] / name).read_bytes())
    with pytest.raises(ValidationError, match="finished compression"):
        check_out_dir(copy, resume=False, overwrite=False)
    assert check_out_dir(copy, resume=False, overwrite=True) == copy
    assert check_out_dir(copy, resume=True, overwrite=False) == copy
    assert json.loads((copy / "record.json").read_text())["finished"] is True


# ------------------------------------------------------------------------------- hostile and unlucky inputs
#
# Every case below is refused with exit 1 and one ``apkit: error:`` line, no traceback, and leaves every
# folder it names as it was (the snapshot of `hostile` before and after is the same).  Grouped by rule:
# 1. a run folder belongs to one run; 5. bounded resources before reading; 6. nothing is wasted on a bad
# input; 7. a model spec must give a model; 8. errors say what is wrong.  Rules 2-4 (whole report sets,
# full disks, escaping) need a finished audit or a small disk: see the tests after the table.

def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with no pixel data (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _folder_data(root: Path, *, classes=None, mask_value=1, size=32, count=4) -> Path:
    """A folder dataset (classes.txt, images/, masks/) of ``count`` tiny images."""
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    names = classes or [f"class{i}" for i in range(TINY["num_classes"])]
    (root / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[8:24, 8:24] = mask_value if mask_value == 0 else 1 + i % len(names)
        Image.fromarray(mask, mode="L").save(root / "masks" / f"im{i}.png")
    return root


def _record(folder: Path, kind: str, inputs: dict, settings: dict | None = None) -> None:
    from apkit.core.runs import RUN_FILE

    atomic_write_json(folder / RUN_FILE, {"kind": kind, "settings": settings or {}, "inputs": inputs,
                                          "apkit_version": apkit.__version__})


@pytest.fixture(scope="module")
def hostile(files, tmp_path_factory):
    """Run folders, hostile files and data for the cases of the hostile-input catalogue."""
    import shutil

    from apkit.cli.group import spec_identity

    root = tmp_path_factory.mktemp("hostile")
    paths = {"root": root, "teacher": files["teacher"]}
    # A train run made by `apkit train` (it records its folder), and an interrupted copy of it.
    paths["train_run"] = root / "train-run"
    code = main_exit([*TRAIN_CMD, "--out", paths["train_run"]])
    assert code == 0
    interrupted = root / "interrupted"
    shutil.copytree(paths["train_run"], interrupted)
    for name in ("model.pt", "metrics.json"):
        (interrupted / name).unlink()
    paths["interrupted"] = interrupted
    corrupt = root / "corrupt-interrupted"
    shutil.copytree(interrupted, corrupt)
    (corrupt / "training" / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint" * 8)
    paths["corrupt_interrupted"] = corrupt
    # Folders of no recorded run: someone's model.pt, a bare training checkpoint, someone's report.
    for name, entry in (("only_model", "model.pt"), ("only_checkpoint", "training/checkpoint.pt"),
                        ("foreign_report", "report.md")):
        target = root / name / entry
        target.parent.mkdir(parents=True)
        target.write_bytes(files["teacher"].read_bytes() if entry.endswith(".pt") else b"# my notes\n")
        paths[name] = root / name
    # A compression run, recorded with the teacher it was made from.
    paths["compress_run"] = root / "compress-run"
    models.save_checkpoint(_net(), paths["compress_run"] / "model.pt")
    atomic_write_json(paths["compress_run"] / "record.json", {"method": "kd"})
    _record(paths["compress_run"], "compress", {"teacher": spec_identity(str(files["teacher"])),
                                                "data_spec": "synthetic"})
    _hostile_checkpoints(root, files, paths)
    _hostile_data(root, paths)
    return paths


def main_exit(argv) -> int:
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code or 0
    return 0


def _hostile_checkpoints(root: Path, files, paths) -> None:
    import zipfile

    payload = torch.load(files["teacher"], weights_only=True)
    bomb = root / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("bomb/data/0", bytes(64_000_000))
    paths["bomb"] = bomb
    variants = {
        "huge_classes": {**payload, "config": {**payload["config"], "num_classes": 10**10}},
        "string_classes": {**payload, "config": {**payload["config"], "num_classes": "8"}},
        "unknown_option": {**payload, "config": {**payload["config"],
                                                  "options": {**payload["config"]["options"], "widht_divisor": 8}}},
        "nan_student": {**payload, "state_dict": {k: v.clone().fill_(float("nan")) if k.endswith("weight") else v
                                                  for k, v in payload["state_dict"].items()}},
    }
    for name, content in variants.items():
        torch.save(content, root / f"{name}.pt")
        paths[name] = root / f"{name}.pt"


def _hostile_data(root: Path, paths) -> None:
    import shutil

    paths["zero_masks"] = _folder_data(root / "zero-masks", mask_value=0)
    bomb_images = _folder_data(root / "bomb-image")
    (bomb_images / "images" / "im0.png").write_bytes(_png_header(30000, 30000))
    paths["bomb_image"] = bomb_images
    bomb_masks = _folder_data(root / "bomb-mask")
    (bomb_masks / "masks" / "im0.png").write_bytes(_png_header(30000, 30000))
    paths["bomb_mask"] = bomb_masks
    folder_mask = _folder_data(root / "mask-is-folder")
    (folder_mask / "masks" / "im1.png").unlink()
    (folder_mask / "masks" / "im1.png").mkdir()
    paths["mask_is_folder"] = folder_mask
    folder_classes = _folder_data(root / "classes-is-folder")
    (folder_classes / "classes.txt").unlink()
    (folder_classes / "classes.txt").mkdir()
    paths["classes_is_folder"] = folder_classes
    shutil.rmtree(root / "unused", ignore_errors=True)


_AUDIT_FOLDER = ["--image-size", "32", "--batch-size", "4", "--resamples", "20", "--device", "cpu", "--quiet"]

# Each case: (id, argv with {name} for a path of `hostile` and {out} for a fresh folder, fragments of the line).
HOSTILE_CASES = [
    # 1. A run folder belongs to one run.
    ("compress-into-its-teachers-run", ["compress", "--teacher", "{train_run}/model.pt", "--out", "{train_run}",
                                        *TRAIN], ["holds an apkit train run, not a compress run", "--overwrite"]),
    ("train-into-a-compress-run", [*TRAIN_CMD, "--out", "{compress_run}"],
     ["holds an apkit compress run, not a train run", "--overwrite"]),
    ("train-over-someones-model", [*TRAIN_CMD, "--out", "{only_model}"],
     ["not an apkit train run (model.pt)", "--overwrite"]),
    ("train-over-a-bare-checkpoint", [*TRAIN_CMD, "--out", "{only_checkpoint}"],
     ["interrupted train run", "--resume", "--overwrite"]),
    ("train-interrupted-without-resume", [*TRAIN_CMD, "--out", "{interrupted}"],
     ["interrupted train run (training/checkpoint.pt)", "--resume", "--overwrite"]),
    ("compress-resume-other-teacher", ["compress", "--teacher", "{nan_student}", "--out", "{compress_run}",
                                       "--resume", *TRAIN], ["cannot resume", "inputs changed", "teacher"]),
    ("audit-over-a-train-run", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--out", "{train_run}",
                                *AUDIT], ["holds an apkit train run, not a audit run", "--overwrite"]),
    ("audit-over-a-foreign-report", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--out",
                                     "{foreign_report}", *AUDIT], ["not an apkit audit run (report.md)",
                                                                   "--overwrite"]),
    ("bench-into-a-train-run", ["bench", "--profile", "smoke", "--out", "{train_run}", "--quiet"],
     ["holds an apkit train run, not a bench run", "--overwrite"]),
    # 5. Bounded resources before reading.
    ("audit-zip-bomb", ["audit", "--teacher", "{teacher}", "--student", "{bomb}", "--out", "{out}", *AUDIT],
     ["bomb.pt", "expands to 64.0 MB", "refused unread"]),
    ("compress-huge-class-count", ["compress", "--teacher", "{huge_classes}", "--out", "{out}", *TRAIN],
     ["num_classes 10000000000", "from 1 to 100000"]),
    ("audit-huge-num-classes", ["audit", "--teacher", "torchvision:resnet18={teacher}", "--student", "{teacher}",
                                "--num-classes", "10000000000", "--out", "{out}", *AUDIT],
     ["num_classes must be <= 100000, got 10000000000"]),
    ("audit-bomb-image", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--data",
                          "folder:{bomb_image}", "--out", "{out}", *_AUDIT_FOLDER], ["im0.png", "too large to decode"]),
    ("audit-bomb-mask", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--data",
                         "folder:{bomb_mask}", "--out", "{out}", *_AUDIT_FOLDER], ["mask", "im0.png", "too large"]),
    # 6. Nothing is wasted on a bad input.
    ("audit-all-zero-masks", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--data",
                              "folder:{zero_masks}", "--out", "{out}", *_AUDIT_FOLDER],
     ["no image of the data holds an object", "check the masks"]),
    # 7. A model spec must give a model.
    ("audit-student-exits", ["audit", "--teacher", "{teacher}", "--student", "sys:exit=T", "--out", "{out}", *AUDIT],
     ["model factory 'sys:exit'", "SystemExit", "must return a torch.nn.Module"]),
    ("compress-teacher-exits", ["compress", "--teacher", "sys:exit=T", "--out", "{out}", *TRAIN],
     ["model factory 'sys:exit'", "SystemExit"]),
    ("audit-factory-returns-no-model", ["audit", "--teacher", "{teacher}", "--student", "builtins:dict=T", "--out",
                                        "{out}", *AUDIT], ["returned a dict", "not a torch.nn.Module"]),
    # 8. Errors say what is wrong.
    ("audit-string-class-count", ["audit", "--teacher", "{teacher}", "--student", "{string_classes}", "--out",
                                  "{out}", *AUDIT], ["num_classes '8' (a str)", "must be an integer"]),
    ("audit-unknown-config-option", ["audit", "--teacher", "{unknown_option}", "--student", "{teacher}", "--out",
                                     "{out}", *AUDIT],
     ["option 'widht_divisor' that model 'vgg_small' does not take", "its options: width_divisor"]),
    ("audit-mask-is-a-folder", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--data",
                                "folder:{mask_is_folder}", "--out", "{out}", *_AUDIT_FOLDER],
     ["im1.png' is a folder, not"]),
    ("audit-classes-is-a-folder", ["audit", "--teacher", "{teacher}", "--student", "{teacher}", "--data",
                                   "folder:{classes_is_folder}", "--out", "{out}", *_AUDIT_FOLDER],
     ["classes.txt' is a folder, not a file"]),
    ("train-resume-corrupt-checkpoint", [*TRAIN_CMD, "--out", "{corrupt_interrupted}", "--resume"],
     ["training/checkpoint.pt", "corrupt", "--overwrite"]),
    ("audit-nan-student", ["audit", "--teacher", "{teacher}", "--student", "{nan_student}", "--out", "{out}",
                           *AUDIT], ["nan_student.pt' hold NaN or infinity", "features.0.weight"]),
    ("bench-paper-without-numbers", ["bench", "--profile", "smoke", "--out", "{out}", "--set", 'paper="x"'],
     ["bench setting paper", "'x'", "voc, imagenet"]),
]


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (_digest(p) if p.is_file() else "/") for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("template, fragments", [c[1:] for c in HOSTILE_CASES], ids=[c[0] for c in HOSTILE_CASES])
def test_hostile_input_is_refused_in_one_line(hostile, tmp_path, capsys, template, fragments):
    before = _tree(hostile["root"])
    out = tmp_path / "out"
    values = {k: str(v) for k, v in hostile.items()} | {"out": str(out)}
    code, err = _run_cli([part.format(**values) for part in template], capsys)
    # A malformed data folder is followed by the expected layout, as everywhere in apkit.
    _check_stderr(code, err, fragments, "layout" if any("folder:" in part for part in template) else "error")
    assert _tree(hostile["root"]) == before, "a refused command must leave every folder as it was"
    assert not out.exists(), "a refused command must not leave an output folder"


# Rule 4: everything written is escaped for where it is read.  Rule 1: the same audit may rerun in its folder.
# Every class name is hostile, so that whichever classes the untrained models keep, their rows show it.
HOSTILE_CLASSES = [f"<script>alert({i})</script>|<img src=x onerror=alert({i})>" for i in range(TINY["num_classes"])]


def test_audit_report_escapes_hostile_names_and_reruns_in_its_own_folder(files, tmp_path, capsys):
    import csv
    import io

    data = _folder_data(tmp_path / "data", classes=HOSTILE_CLASSES, count=8)
    student = tmp_path / '=HYPERLINK("http:x","click").pt'
    student.write_bytes(files["teacher"].read_bytes())
    out = tmp_path / "audit"
    argv = ["audit", "--teacher", files["teacher"], "--student", student, "--data", f"folder:{data}", "--out", out,
            "--protocol", "imagenet", *_AUDIT_FOLDER]  # imagenet: every image's top-1 class is scored
    code, err = _run_cli(argv, capsys)
    assert code == 0, err
    cells = [cell for row in csv.reader(io.StringIO((out / "report.csv").read_text(encoding="utf-8"))) for cell in row]
    assert any(cell.startswith("'=HYPERLINK") for cell in cells)
    formulas = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not _is_number(c))]
    assert formulas == [], formulas
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "<script" not in markdown and "<img" not in markdown and "&lt;script&gt;" in markdown
    for table in markdown.split("\n\n"):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        widths = {line.replace("\\|", "").count("|") for line in rows}
        assert len(widths) <= 1, table  # an escaped | in a class name does not add a cell
    assert "&lt;/script&gt;\\|&lt;img" in markdown

    # The same audit again in its own folder is accepted; the set is replaced whole, nothing left over.
    first = (out / "report.json").read_bytes()
    code, err = _run_cli(argv, capsys)
    assert code == 0, err
    assert (out / "report.json").read_bytes() == first
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.csv", "report.html", "report.json",
                                                      "report.md", "run.json"]
    # Another audit in that folder is refused, and leaves it as it was; --overwrite replaces it.
    before = _tree(out)
    code, err = _run_cli([*argv, "--methods", "gradcam,lrp"], capsys)
    _check_stderr(code, err, ["holds a audit run with other settings", "methods", "--overwrite"], "error")
    assert _tree(out) == before
    code, err = _run_cli([*argv, "--tolerances", "0,3", "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["settings"]["tolerances"] == "0,3"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
