"""The shared names and defaults: consistent with each other and with the registries that use them."""

from apkit.core import names


def test_choices_are_unique_and_titled():
    for choices in (names.PAPER_ATTRIBUTION_METHODS, names.TARGET_POLICY_NAMES, names.COMPRESSION_METHOD_NAMES,
                    names.REGULARIZER_NAMES, names.PROTOCOL_NAMES, names.GATE_NAMES, names.BENCH_PROFILE_NAMES):
        assert len(set(choices)) == len(choices) and all(isinstance(name, str) and name for name in choices)
    assert set(names.ATTRIBUTION_TITLES) == set(names.PAPER_ATTRIBUTION_METHODS)
    assert set(names.REGULARIZER_TITLES) == set(names.REGULARIZER_CHOICES)
    assert set(names.COMPRESSION_METHOD_NAMES) <= set(names.COMPRESSION_TITLES)
    assert set(names.PAPER_WEIGHTS) == set(names.REGULARIZER_NAMES)


def test_naive_is_the_first_regularizer_choice():
    assert names.REGULARIZER_CHOICES == (names.NAIVE, *names.REGULARIZER_NAMES) == ("none", "ewa", "swa", "sswa")


def test_the_names_match_the_registries():
    from apkit.attribution import ATTRIBUTION_METHODS

    assert set(names.PAPER_ATTRIBUTION_METHODS) <= set(ATTRIBUTION_METHODS.names())


def test_every_public_name_is_exported():
    assert all(hasattr(names, name) for name in names.__all__)
