"""Training recipes: one declaration of every training setting, its default and its check."""

import dataclasses

import pytest

from apkit.core.errors import UnknownNameError, ValidationError
from apkit.training import RECIPES, Recipe


def test_defaults_and_round_trip():
    recipe = Recipe(epochs=3, lr=0.1)
    assert (recipe.batch_size, recipe.momentum, recipe.weight_decay, recipe.milestones, recipe.gamma,
            recipe.schedule) == (64, 0.9, 1e-4, (), 0.1, "step")
    data = Recipe(epochs=5, lr=0.1, milestones=[2, 4]).to_dict()
    assert data["milestones"] == [2, 4] and list(data) == list(Recipe.field_names())
    assert Recipe.from_dict(data) == Recipe(epochs=5, lr=0.1, milestones=(2, 4))
    assert recipe.replace(epochs=7).epochs == 7 and recipe.epochs == 3


@pytest.mark.parametrize("changes, fragment", [
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"lr": 0}, "lr must be > 0.0"),
    ({"momentum": 1.0}, "momentum must be < 1.0"),
    ({"weight_decay": -1}, "weight_decay must be >= 0.0"),
    ({"milestones": (3, 2)}, "milestones must be strictly increasing"),
    ({"milestones": "10,20"}, "milestones must be a sequence of epochs"),
    ({"gamma": 0.0}, "gamma must be > 0.0"),
])
def test_bad_values_name_the_setting(changes, fragment):
    with pytest.raises(ValidationError, match=fragment):
        Recipe(**{"epochs": 2, "lr": 0.1, **changes})
    with pytest.raises(ValidationError, match=fragment):  # replace checks like construction
        Recipe(epochs=2, lr=0.1).replace(**changes)


def test_unknown_or_missing_settings_are_refused():
    with pytest.raises(UnknownNameError, match="unknown schedule 'linear'"):
        Recipe(epochs=2, lr=0.1, schedule="linear")
    with pytest.raises(UnknownNameError, match="unknown training setting 'epoch'; did you mean epochs"):
        Recipe.from_dict({"epoch": 2, "lr": 0.1})
    with pytest.raises(ValidationError, match="lack lr"):
        Recipe.from_dict({"epochs": 2})
    with pytest.raises(ValidationError, match="must be a mapping"):
        Recipe.from_dict([("epochs", 2)])


def test_registered_recipes_are_recipes():
    assert all(isinstance(RECIPES.get(name), Recipe) for name in RECIPES.names())
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPES.get("teacher").epochs = 1
