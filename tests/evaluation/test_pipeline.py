"""audit_checkpoints' own work before any model is built: the students' names and the folder-only options."""

import pytest

from apkit.core.errors import ValidationError
from apkit.evaluation.pipeline import _folder_options, _unique_names, audit_checkpoints, model_name


@pytest.mark.parametrize("spec, name", [
    ("runs/kd-swa/model.pt", "kd-swa"), ("runs/kd-swa/model_state.pt", "kd-swa"), ("pruned.pt", "pruned"),
    ("torchvision:resnet18=runs/pruned.safetensors", "pruned"), ("model.pt", "model"),
])
def test_model_name_is_the_weights_file_or_its_run_folder(spec, name):
    assert model_name(spec) == name


def test_repeated_names_and_the_teachers_name_get_a_number():
    names = _unique_names(["a/model.pt", "b/a.pt", "teacher.pt", "c/a/model.pt", "teacher-2.pt"])
    assert names == ["a", "a-2", "teacher-2", "a-3", "teacher-2-2"]


def test_folder_options_are_only_for_folder_data():
    assert _folder_options("folder:/data", image_size=96, mean=None, std=None) == {"image_size": 96}
    assert _folder_options("synthetic", image_size=None, mean=None, std=None) == {}
    with pytest.raises(ValidationError, match="image_size and mean apply only to folder:ROOT data"):
        _folder_options("synthetic", image_size=96, mean=[0.5] * 3, std=None)
    with pytest.raises(ValidationError, match="std applies only"):
        audit_checkpoints("teacher.pt", ["student.pt"], data="voc:/nowhere", std=[0.5] * 3)
