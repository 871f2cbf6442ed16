"""train_model: the recipe of a run, and its options checked before any data is read."""

import pytest

from apkit.core.errors import UnknownNameError, ValidationError
from apkit.training import RECIPES, train_model
from apkit.training.pipeline import resolve_recipe


def test_the_recipe_is_the_named_one_with_the_given_changes():
    assert resolve_recipe(None, "synthetic") == RECIPES.get("synthetic")
    assert resolve_recipe(None, "voc:/data") == RECIPES.get("teacher")
    changed = resolve_recipe("kd", "synthetic", {"epochs": 3, "milestones": [1, 2], "lr": None})
    assert changed == RECIPES.get("kd").replace(epochs=3, milestones=(1, 2))
    with pytest.raises(UnknownNameError, match="unknown training recipe 'teachr'"):
        resolve_recipe("teachr", "synthetic")


def test_bad_options_are_refused_before_any_data_is_read(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(UnknownNameError, match="unknown option of train_model 'seeds'; did you mean seed"):
        train_model("vgg_small", out_dir=out, seeds=1)
    with pytest.raises(ValidationError, match="epochs must be >= 1, got 0"):
        train_model("vgg_small", out_dir=out, overrides={"epochs": 0})
    with pytest.raises(ValidationError, match="num_workers must be >= 0"):
        train_model("vgg_small", out_dir=out, num_workers=-1)
    assert not out.exists()
