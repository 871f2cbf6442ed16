"""audit_checkpoints' own work before any model is built: the students' names and the folder-only options."""

import pytest

from apkit.core.errors import ValidationError
from apkit.evaluation.pipeline import _input_options, _unique_names, audit_checkpoints, model_name


@pytest.mark.parametrize("spec, name", [
    ("runs/kd-swa/model.pt", "kd-swa"), ("runs/kd-swa/model_state.pt", "kd-swa"), ("pruned.pt", "pruned"),
    ("torchvision:resnet18=runs/pruned.safetensors", "pruned"), ("model.pt", "model"),
])
def test_model_name_is_the_weights_file_or_its_run_folder(spec, name):
    assert model_name(spec) == name


def test_repeated_names_and_the_teachers_name_get_a_number():
    names = _unique_names(["a/model.pt", "b/a.pt", "teacher.pt", "c/a/model.pt", "teacher-2.pt"])
    assert names == ["a", "a-2", "teacher-2", "a-3", "teacher-2-2"]


def test_input_options_are_those_given_else_those_recorded_for_the_teacher(tmp_path):
    import json

    (tmp_path / "record.json").write_text(json.dumps({"input": {"image_size": 64, "mean": [0.5, 0.5, 0.5]}}))
    teacher = f"torchvision:resnet18={tmp_path / 'model_state.pt'}"
    assert _input_options(teacher, image_size=None, mean=None, std=None) == {"image_size": 64, "mean": [0.5] * 3}
    assert _input_options(teacher, image_size=96, mean=None, std=[0.2] * 3) == {
        "image_size": 96, "mean": [0.5] * 3, "std": [0.2] * 3}
    assert _input_options(tmp_path / "elsewhere" / "nothing.pt", image_size=None, mean=None, std=None) == {}
    with pytest.raises(ValidationError, match="mean apply only to data read from files"):
        audit_checkpoints(_teacher(tmp_path), [_teacher(tmp_path)], data="synthetic", mean=[0.5] * 3)


def test_a_teacher_without_a_record_is_audited_at_its_students_recorded_input(tmp_path):
    import json

    for name, size in (("a", 64), ("b", 96)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "record.json").write_text(json.dumps({"input": {"image_size": size}}))
    teacher = f"torchvision:resnet18={tmp_path / 'plain' / 'weights.pt'}"  # trained elsewhere: no record
    students = [f"torchvision:resnet18={tmp_path / n / 'model_state.pt'}" for n in ("a", "b")]
    assert _input_options(teacher, students, image_size=None, mean=None, std=None) == {"image_size": 64}
    assert _input_options(teacher, students, image_size=32, mean=None, std=None) == {"image_size": 32}
    # Synthetic images are rendered at the teacher's size with their own normalisation: nothing recorded applies.
    assert _input_options(teacher, students, data="synthetic", image_size=None, mean=None, std=None) == {}


def _teacher(tmp_path):
    from apkit import models

    return models.save_checkpoint(models.create("vgg_small", num_classes=8, input_size=32), tmp_path / "t.pt")
