"""The bench's stage names and seeds, and the teacher each model is evaluated against."""

from pathlib import Path

import pytest
import torch

from apkit.bench.runner import evaluated_methods
from apkit.bench.stages import (
    BenchRun,
    cell_keys,
    first_seed_or_teacher,
    model_key,
    parse_key,
    regularizers_of,
    stage_keys,
    training_seeds,
)

SETTINGS = {
    "seeds": [0, 1], "teachers": {"teacher": {}, "wide": {}}, "regularizers": ["none", "swa"],
    "compressions": {"kd": {}, "structured-l1": {"seeds": [3, 4, 5], "teacher": "wide"}},
    "evaluation": {"attribution_methods": ["gradcam", "lrp"], "primary": "gradcam"},
}


@pytest.mark.parametrize("compression, regularizer, seed", [("kd", "none", 0), ("structured-l1", "swa", 12)])
def test_model_keys_round_trip(compression, regularizer, seed):
    key = model_key(compression, regularizer, seed)
    assert key == f"{compression}-{regularizer}-s{seed}" and parse_key(key) == (compression, regularizer, seed)


def test_the_grid_and_its_seeds():
    assert training_seeds(SETTINGS, "kd") == [0, 1] and training_seeds(SETTINGS, "structured-l1") == [3, 4, 5]
    assert stage_keys(SETTINGS) == ["kd-none-s0", "kd-none-s1", "kd-swa-s0", "kd-swa-s1",
                                    *[f"structured-l1-{r}-s{s}" for r in ("none", "swa") for s in (3, 4, 5)]]
    assert cell_keys(SETTINGS) == [("kd", "none"), ("kd", "swa"), ("structured-l1", "none"), ("structured-l1", "swa")]
    assert [first_seed_or_teacher(SETTINGS, k) for k in ("wide", "kd-swa-s0", "kd-swa-s1", "structured-l1-none-s3",
                                                         "structured-l1-none-s4")] == [True, True, False, True, False]


def test_a_compression_with_its_own_regularizers():
    settings = {**SETTINGS, "compressions": {"kd": {}, "qat-2bit": {"regularizers": ["none"], "seeds": [7]}}}
    assert regularizers_of(settings, "kd") == ["none", "swa"] and regularizers_of(settings, "qat-2bit") == ["none"]
    assert cell_keys(settings) == [("kd", "none"), ("kd", "swa"), ("qat-2bit", "none")]
    assert stage_keys(settings) == ["kd-none-s0", "kd-none-s1", "kd-swa-s0", "kd-swa-s1", "qat-2bit-none-s7"]


def test_each_model_is_evaluated_against_its_teacher_with_its_methods():
    run = BenchRun(SETTINGS, Path("."), torch.device("cpu"), progress=False)
    assert [run.teacher_of(k) for k in ("teacher", "wide", "kd-none-s1", "structured-l1-swa-s4")] == [
        "teacher", "wide", "teacher", "wide"]
    assert run.source_key("kd-swa") == "kd-swa-s0" and run.source_key("structured-l1-none") == "structured-l1-none-s3"
    assert run.source_key("kd-swa-s1") == "kd-swa-s1" and run.source_key("wide") == "wide"
    assert evaluated_methods(SETTINGS, "kd-swa-s0") == ["gradcam", "lrp"]
    assert evaluated_methods(SETTINGS, "kd-swa-s1") == ["gradcam"]  # other seeds: the primary method only
