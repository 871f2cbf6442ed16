"""The registry: register, get, help, iteration, duplicates and the unknown-name message."""

import pytest

from apkit.core.errors import UnknownNameError, ValidationError
from apkit.core.registry import Registry


@pytest.fixture
def shapes():
    registry = Registry("shape")

    @registry.register("square", help="four equal sides")
    def square(side):
        return side * side

    def circle(radius):
        """Round.

        More text that help does not show.
        """
        return 3 * radius * radius

    registry.register("circle", circle)
    registry.register("triangle", lambda side: side)  # no docstring, no help
    return registry


def test_register_and_get(shapes):
    assert shapes.get("square")(3) == 9 and shapes.get("circle")(1) == 3
    assert shapes.names() == ["square", "circle", "triangle"]  # registration order
    assert list(shapes) == shapes.names() and len(shapes) == 3
    assert "square" in shapes and "hexagon" not in shapes and 3 not in shapes
    assert repr(shapes) == "Registry('shape', names=['square', 'circle', 'triangle'])"


def test_help_is_given_or_the_first_docstring_line(shapes):
    assert shapes.help("square") == "four equal sides"
    assert shapes.help("circle") == "Round."
    assert shapes.help("triangle") == ""
    with pytest.raises(UnknownNameError):
        shapes.help("hexagon")


def test_register_as_decorator_returns_the_object():
    registry = Registry("model")

    def build():
        return 1

    assert registry.register("build")(build) is build
    assert registry.register("other", build) is build


def test_unknown_name_lists_close_matches_then_every_name(shapes):
    with pytest.raises(UnknownNameError) as info:
        shapes.get("sqare")
    assert str(info.value) == "unknown shape 'sqare'; did you mean square? choose one of: square, circle, triangle"
    with pytest.raises(UnknownNameError, match="unknown shape 3; choose one of"):
        shapes.get(3)


def test_duplicate_registration_is_refused(shapes):
    with pytest.raises(ValidationError, match="shape 'square' is already registered"):
        shapes.register("square", object())
    assert shapes.help("square") == "four equal sides"  # the first entry is kept
