"""Compression settings: a training Recipe, the regularizer's settings and the method's, under one flat name each."""

import dataclasses

import pytest

from apkit.compression import (
    DistillationSettings,
    MatchingSettings,
    Settings,
    StructuredSettings,
    UnstructuredSettings,
    default_settings,
    resolve_settings,
)
from apkit.compression.settings import REGULARIZER_SETTINGS, check_regularizer_settings
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.training import RECIPES, Recipe


def test_settings_compose_a_recipe_and_the_method_settings():
    s = default_settings("kd", "paper")
    assert s.train == RECIPES.get("kd") and isinstance(s.matching, MatchingSettings)
    assert s.method_settings == DistillationSettings(width_divisor=8)
    assert isinstance(default_settings("structured").method_settings, StructuredSettings)
    assert default_settings("unstructured", "paper").method_settings == UnstructuredSettings(amount=0.2, steps=16)


def test_to_dict_keeps_one_flat_key_per_setting_in_the_record_order():
    data = default_settings("structured", "quick", weight=10, ignored_layers=["features.0"]).to_dict()
    assert list(data) == ["method", "epochs", "lr", "batch_size", "momentum", "weight_decay", "milestones", "gamma",
                          "schedule", "optimizer", "weight", "scale_weight", "drop", "teacher_layer", "student_layer",
                          "resize", "cache_teacher", "pruning_ratio", "scheme", "pruning_ratio_dict", "ignored_layers",
                          "importance", "global_pruning", "round_to"]
    assert data["weight"] == 10 and data["ignored_layers"] == ["features.0"] and data["milestones"] == []
    rebuilt = Settings.from_values("structured", {k: v for k, v in data.items() if k != "method"})
    assert rebuilt == default_settings("structured", "quick", weight=10, ignored_layers=("features.0",))
    assert list(default_settings("unstructured").to_dict())[-3:] == ["amount", "steps", "layers"]


def test_overrides_and_objects_resolve_to_the_same_settings():
    base = default_settings("kd", "quick")
    assert resolve_settings("kd", base, epochs=3).train.epochs == 3
    assert resolve_settings("kd", {"profile": "paper", "lr": 0.5}).train == RECIPES.get("kd").replace(lr=0.5)
    assert resolve_settings("kd", "quick", cache_teacher=False).cache_teacher is False
    with pytest.raises(ValidationError, match="settings are for method 'kd', not 'structured'"):
        resolve_settings("structured", base)


@pytest.mark.parametrize("changes, error, fragment", [
    ({"pruning_ratio": 0.5}, ValidationError, "unknown kd setting 'pruning_ratio'"),
    ({"reg_weight": 50}, ValidationError, "did you mean weight?"),
    ({"epochs": 0}, ValidationError, "epochs must be >= 1, got 0"),
    ({"weight": -1}, ValidationError, "weight must be >= 0.0"),
    ({"drop": 1.0}, ValidationError, "drop must be < 1.0"),
    ({"temperature": 0}, ValidationError, "temperature must be > 0.0"),
    ({"student": "vgg99"}, UnknownNameError, "unknown model 'vgg99'"),
    ({"student_options": 3}, ValidationError, "student_options must be a mapping"),
    ({"schedule": "linear"}, UnknownNameError, "unknown schedule 'linear'"),
])
def test_each_bad_value_names_the_setting(changes, error, fragment):
    with pytest.raises(error, match=fragment):
        default_settings("kd", "quick", **changes)


def test_method_settings_check_their_own_values():
    with pytest.raises(UnknownNameError, match="structured pruning scheme"):
        StructuredSettings(scheme="paper-vgg19")
    with pytest.raises(ValidationError, match="ignored_layers must be a list"):
        StructuredSettings(ignored_layers="features.0")
    with pytest.raises(ValidationError, match="steps must be >= 1"):
        UnstructuredSettings(steps=0)
    with pytest.raises(ValidationError, match="takes UnstructuredSettings"):
        Settings("unstructured", Recipe(1, 0.1), method_settings=StructuredSettings())
    with pytest.raises(ValidationError, match="applies to unstructured pruning"):
        _ = default_settings("kd").final_sparsity
    with pytest.raises(ValidationError, match="at least 'epochs' and 'lr'"):
        Settings.from_values("kd", {"epochs": 1})


def test_regularizer_settings_are_refused_with_the_naive_baseline():
    assert REGULARIZER_SETTINGS == tuple(f.name for f in dataclasses.fields(MatchingSettings))
    check_regularizer_settings("swa", "quick", weight=10)
    check_regularizer_settings("none", default_settings("kd"))  # defaults only
    with pytest.raises(ValidationError, match="drop=0.3"):
        check_regularizer_settings("none", {"profile": "quick", "drop": 0.3})
