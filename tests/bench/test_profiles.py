"""Benchmark profiles: plain settings, and validating one means building what it describes."""

import json

import pytest

from apkit.bench import PROFILES, resolve_profile
from apkit.bench.profiles import compression_settings, roar_settings, teacher_recipe, validate_profile
from apkit.compression import resolve_settings
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.evaluation.roar import DEFAULT_RECIPE, RoarSettings
from apkit.training import RECIPES, Recipe


def test_profiles_are_registered_and_overridable():
    assert PROFILES.names() == ["smoke", "default", "voc", "imagenet"]
    settings = resolve_profile("voc", ["compressions.kd.epochs=2", "evaluation.attribution_methods=[\"lrp\"]"])
    assert settings["compressions"]["kd"]["epochs"] == 2
    assert settings["evaluation"]["attribution_methods"] == ["lrp"]
    assert resolve_profile("voc")["compressions"]["structured"]["epochs"] == 60  # supplement C.2
    with pytest.raises(ValidationError, match="unknown setting 'epoch'"):
        resolve_profile("smoke", ["teachers.teacher.train.epoch=3"])
    with pytest.raises(ValidationError, match="a.b=value"):
        resolve_profile("smoke", ["epochs"])
    with pytest.raises(UnknownNameError, match="smoke"):
        resolve_profile("nope")


def test_every_profile_validates_and_builds_its_objects():
    for name in PROFILES.names():
        settings = resolve_profile(name)
        validate_profile(settings)
        for key in settings["teachers"]:
            assert isinstance(teacher_recipe(settings, key), Recipe)
        for key in settings["compressions"]:
            for regularizer in settings["regularizers"]:
                method, values = compression_settings(settings, key, regularizer)
                assert resolve_settings(method, values).method == method
        if settings["roar"]["enabled"]:
            measured, recipe = roar_settings(settings)
            assert isinstance(measured, RoarSettings) and isinstance(recipe, Recipe)


def test_training_sections_are_the_recipes_as_plain_data():
    smoke = resolve_profile("smoke")
    teacher = smoke["teachers"]["teacher"]["train"]
    assert teacher == {**RECIPES.get("synthetic").to_dict(), "epochs": 3}
    assert json.loads(json.dumps(teacher)) == teacher
    # Sections a profile writes itself hold the settings it sets, gamma left to the recipe's default.
    assert smoke["roar"]["train"] == {"epochs": 1, "lr": 0.05, "batch_size": 64, "momentum": 0.9,
                                      "weight_decay": 1e-4, "milestones": [], "schedule": "step", "optimizer": "sgd"}
    assert roar_settings(smoke)[1] == DEFAULT_RECIPE.replace(epochs=1, lr=0.05)
    voc = resolve_profile("voc")
    assert teacher_recipe(voc, "teacher") == Recipe(250, 0.1, 128, weight_decay=5e-4, milestones=(100, 150, 200))


def test_compression_entries_pass_their_settings_and_the_regularizers():
    smoke = resolve_profile("smoke", ["compressions.structured.seeds=[0, 1]"])
    method, values = compression_settings(smoke, "structured", "swa")
    assert method == "structured" and "seeds" not in values and "method" not in values
    assert values == {"profile": "quick", "epochs": 1, "weight": 50.0}
    assert compression_settings(smoke, "structured", "none")[1] == {"profile": "quick", "epochs": 1}
    assert compression_settings(smoke, "qat-2bit", "swa") == ("qat", {"profile": "quick", "bits": 2, "epochs": 1,
                                                                     "weight": 50.0})


def test_imagenet_structured_row_is_pruned_from_its_own_full_network():
    imagenet = resolve_profile("imagenet")
    structured = imagenet["compressions"]["structured"]
    teacher = imagenet["teachers"][structured["teacher"]]
    assert teacher["model"] == "resnet34"  # supplement Table 4: ResNet-34, not the VGG16 of Table 3
    assert all(spec.get("teacher", "teacher") == "teacher" for key, spec in imagenet["compressions"].items()
               if spec["method"] == "unstructured")
    assert imagenet["teachers"]["teacher"]["model"] == "vgg16_bn"


@pytest.mark.parametrize("override, error, fragments", [
    ("teachers.teacher.train.epochs=0", ValidationError, ["teachers.teacher.train", "epochs must be >= 1"]),
    ('teachers.teacher.train.schedule="linear"', UnknownNameError, ["teachers.teacher.train", "schedule 'linear'"]),
    ("roar.train.lr=0", ValidationError, ["roar.train", "lr must be > 0.0"]),
    ("roar.fractions=[1.5]", ValidationError, ["bench setting roar", "fraction must be <= 1.0"]),
    ('roar.metric="top1"', UnknownNameError, ["roar.metric", "unknown metric 'top1'"]),
    ("compressions.kd.epochz=1", ValidationError, ["compressions.kd", "unknown kd setting 'epochz'"]),
    ('compressions.qat-2bit.regularizers=["swb"]', UnknownNameError,
     ["compressions.qat-2bit.regularizers", "regularizer 'swb'", "did you mean swa"]),
    ("compressions.qat-2bit.regularizers=[]", ValidationError, ["compressions.qat-2bit.regularizers", "non-empty"]),
    ("compressions.qat-2bit.bits=3", ValidationError, ["compressions.qat-2bit", "bits must be one of 8, 4, 2"]),
    ('data.name="vocc"', UnknownNameError, ["data.name", "did you mean voc"]),
])
def test_a_bad_value_is_named_by_its_path(override, error, fragments):
    with pytest.raises(error) as info:
        validate_profile(resolve_profile("smoke", [override]))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_unknown_sections_and_settings_of_an_override():
    with pytest.raises(ValidationError, match="unknown section 'teacher'; did you mean teachers"):
        resolve_profile("smoke", ["teacher.train.epochs=5"])
    with pytest.raises(ValidationError, match="unknown setting 'epoch'; did you mean epochs"):
        resolve_profile("smoke", ["teachers.teacher.train.epoch=3"])
    with pytest.raises(ValidationError, match="'seed' is a value, not a section"):
        resolve_profile("smoke", ["seed.x=1"])


@pytest.mark.parametrize("override, message", [
    ("data.mean=[0.5, 0.5, 0.5]", "applies only to data read from files"),
])
def test_normalisation_is_for_data_read_from_files(override, message):
    with pytest.raises(ValidationError, match=message):
        validate_profile(resolve_profile("smoke", [override]))


@pytest.mark.parametrize("override, message", [
    ("data.std=[0.2, 0.0, 0.2]", "each above 0"),
    ("data.mean=[0.5, 0.5]", "three finite numbers"),
])
def test_file_data_normalisation_is_checked(override, message):
    with pytest.raises(ValidationError, match=message):
        validate_profile(resolve_profile("voc", [override]))


def test_bench_input_options_become_data_settings():
    from apkit.cli.bench import _input_overrides

    inputs = {"image_size": 96, "mean": "0.5,0.4,0.3", "std": None}
    assert _input_overrides(inputs) == ["data.image_size=96", "data.mean=[0.5, 0.4, 0.3]"]
    settings = resolve_profile("voc", _input_overrides(inputs))
    assert settings["data"]["image_size"] == 96 and settings["data"]["mean"] == [0.5, 0.4, 0.3]
