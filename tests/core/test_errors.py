"""The error hierarchy and the one unknown-name message."""

import pytest

from apkit.core import errors
from apkit.core.errors import (
    LISTED_NAMES,
    ApkitError,
    CheckpointError,
    DataError,
    UnknownNameError,
    ValidationError,
    did_you_mean,
    unknown_name,
)


@pytest.mark.parametrize("error,builtin", [(ValidationError, ValueError), (UnknownNameError, KeyError),
                                           (DataError, ValueError), (CheckpointError, ValueError)])
def test_every_error_is_an_apkit_error_and_the_matching_builtin(error, builtin):
    assert issubclass(error, ApkitError) and issubclass(error, builtin)


def test_unknown_name_error_shows_its_message_unquoted():
    assert str(UnknownNameError("unknown model 'x'")) == "unknown model 'x'"  # KeyError would add quotes
    assert str(UnknownNameError()) == ""


def test_did_you_mean():
    assert did_you_mean("lrpp", ["gradcam", "lrp", "rap"]) == "did you mean lrp? "
    assert did_you_mean("vgg_smal", ["vgg_small", "vgg16_bn"]) == "did you mean vgg_small? "
    assert did_you_mean("xyz", ["gradcam", "lrp"]) == ""
    assert did_you_mean(None, ["gradcam"]) == ""  # only strings have close matches


def test_unknown_name_lists_close_matches_first():
    error = unknown_name("lrpp", "attribution method", ["gradcam", "lrp", "rap"])
    assert isinstance(error, UnknownNameError)
    assert str(error) == "unknown attribution method 'lrpp'; did you mean lrp? choose one of: lrp, gradcam, rap"
    assert str(unknown_name(7, "seed", ["a"])) == "unknown seed 7; choose one of: a"
    assert str(unknown_name("b", "kind", ["a"], choose="pick")) == "unknown kind 'b'; pick: a"


def test_unknown_name_shows_at_most_the_listed_names_and_the_count():
    known = [f"name{i:02d}" for i in range(LISTED_NAMES + 3)]
    message = str(unknown_name("zzz", "thing", known))
    assert message.endswith(f"{known[LISTED_NAMES - 1]}, ... ({LISTED_NAMES + 3} in all)")
    assert known[LISTED_NAMES] not in message
    assert errors.LISTED_NAMES == 12
