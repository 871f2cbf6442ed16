"""Run folders: what a folder holds decides whether a run may write there, before any work."""

import json

import pytest

from apkit.core.errors import ValidationError
from apkit.core.runs import RUN_FILE, claim_run_folder, file_identity, run_folder

SETTINGS = {"epochs": 2, "lr": 0.1}
INPUTS = {"teacher": "sha256:aa", "data": "synthetic"}


def _record(folder, kind="train", settings=SETTINGS, inputs=INPUTS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps({"kind": kind, "settings": settings, "inputs": inputs}))


def _claim(folder, kind="train", **options):
    return claim_run_folder(folder, kind, settings=options.pop("settings", SETTINGS),
                            inputs=options.pop("inputs", INPUTS), **options)


def test_an_empty_or_new_folder_is_accepted_and_the_identity_recorded(tmp_path):
    out = tmp_path / "new"
    with run_folder(out, "train", settings={"milestones": (1, 2)}, inputs=INPUTS):
        (out / "model.pt").write_bytes(b"x")
    recorded = json.loads((out / RUN_FILE).read_text())
    assert recorded["kind"] == "train" and recorded["settings"] == {"milestones": [1, 2]}
    assert recorded["inputs"] == INPUTS
    # the same run again: accepted (tuples and lists compare equal once recorded)
    with run_folder(out, "train", settings={"milestones": (1, 2)}, inputs=INPUTS):
        pass


def test_a_refused_run_leaves_no_record_and_no_folder(tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(ValidationError, match="bad data"):
        with run_folder(out, "train", settings=SETTINGS, inputs=INPUTS):
            raise ValidationError("bad data")
    assert not out.exists()


def test_another_kind_of_run_is_refused_unless_overwrite(tmp_path):
    _record(tmp_path / "run", kind="train")
    with pytest.raises(ValidationError, match="holds an apkit train run, not a compress run.*--overwrite"):
        _claim(tmp_path / "run", "compress")
    assert _claim(tmp_path / "run", "compress", overwrite=True)[0] == tmp_path / "run"


def test_other_settings_or_inputs_are_named(tmp_path):
    _record(tmp_path / "run")
    with pytest.raises(ValidationError, match=r"other settings \(lr 0.1 -> 0.5\)"):
        _claim(tmp_path / "run", settings={**SETTINGS, "lr": 0.5})
    with pytest.raises(ValidationError, match=r"cannot resume .*inputs changed \(teacher 'sha256:aa' -> 'sha256:bb'\)"):
        _claim(tmp_path / "run", inputs={**INPUTS, "teacher": "sha256:bb"}, resume=True)


def test_resume_may_lengthen_a_run(tmp_path):
    _record(tmp_path / "run")
    longer = {**SETTINGS, "epochs": 5}
    assert _claim(tmp_path / "run", settings=longer, resume=True, resumable=("epochs",))[1]["settings"] == longer
    with pytest.raises(ValidationError, match="epochs 2 -> 5"):
        _claim(tmp_path / "run", settings=longer, resumable=("epochs",))  # without --resume it is another run


def test_an_interrupted_run_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    _record(out)
    (out / "training").mkdir()
    (out / "training" / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(ValidationError, match=r"interrupted train run \(training/checkpoint.pt\); pass --resume"):
        _claim(out)
    _claim(out, resume=True)
    _claim(out, overwrite=True)
    (out / "metrics.json").write_text("{}")  # finished: rerunning it is the command's own business
    _claim(out)


def test_files_of_no_recorded_run_are_refused(tmp_path):
    out = tmp_path / "someone"
    out.mkdir()
    (out / "model.pt").write_bytes(b"x")
    with pytest.raises(ValidationError, match=r"not an apkit train run \(model.pt\).*--overwrite"):
        _claim(out)
    (out / "metrics.json").write_text("{}")  # a train run made by the Python API (no record): accepted
    _claim(out)
    with pytest.raises(ValidationError, match="not an apkit audit run"):  # an unrecorded report is someone's
        _claim(out, "audit")


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(ValidationError, match="exclude each other"):
        _claim(tmp_path, resume=True, overwrite=True)


def test_file_identity_follows_the_bytes(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    assert file_identity(a) == file_identity(b)  # the same weights under another name are the same input
    b.write_bytes(b"other")
    assert file_identity(a) != file_identity(b)
    assert file_identity(tmp_path / "none.pt").startswith("missing:")


def test_a_benchmark_folder_continues_without_resume(tmp_path):
    """The benchmark keys its stages (settings.json): an interrupted one, recorded or not, continues when rerun."""
    out = tmp_path / "bench"
    out.mkdir()
    (out / "settings.json").write_text("{}")
    (out / "stages").mkdir()
    _claim(out, "bench")  # made before run folders were recorded
    _record(out, kind="bench")
    _claim(out, "bench")
    with pytest.raises(ValidationError, match="holds a bench run with other settings"):
        _claim(out, "bench", settings={"profile": "smoke"})
