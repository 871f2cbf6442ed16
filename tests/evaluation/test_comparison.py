"""Comparisons of a student with its teacher on hand-made per-pair tables: common pairs, paired differences,
per class, the most-changed pairs, and predictive differences, checked against hand-computed values."""

import math

import pytest
import torch

from apkit.evaluation.comparison import (
    compare_attribution,
    compare_predictions,
    most_changed,
    paired_difference,
    paired_values,
    per_class,
    score_columns,
)
from apkit.evaluation.pairs import PairTable
from apkit.metrics.statistics import paired_bootstrap

NAN = math.nan

# The student keeps (0,1), (0,2), (1,1), (3,0); the teacher (0,1), (1,1), (2,0), (3,0) but not (0,2).
STUDENT = PairTable.from_dict({
    "image": [0, 0, 1, 2, 3], "class": [1, 2, 1, 0, 0], "kept": [True, True, True, False, True],
    "auc": [0.75, 0.5, 0.625, NAN, 0.875], "hit": [1.0, 0.0, 1.0, NAN, 0.0], "hit@3": [1.0, 1.0, 1.0, NAN, 1.0],
    "cos": [0.5, 0.25, NAN, NAN, 0.75], "l2": [0.5, 1.0, NAN, NAN, 0.25],
})
TEACHER = PairTable.from_dict({
    "image": [3, 2, 1, 0, 0], "class": [0, 0, 1, 2, 1], "kept": [True, True, True, False, True],
    "auc": [0.5, 0.25, NAN, 0.125, 0.625], "hit": [1.0, 1.0, 0.0, 1.0, 1.0], "hit@3": [1.0, 1.0, 1.0, 1.0, 1.0],
    "cos": [NAN] * 5, "l2": [NAN] * 5,
})


def test_score_columns_name_every_tolerance_after_the_first():
    assert score_columns((0,)) == {"auc": "auc", "pointing": "hit"}
    assert score_columns((0, 3, 5)) == {"auc": "auc", "pointing": "hit", "pointing@3": "hit@3", "pointing@5": "hit@5"}


def test_paired_values_are_the_common_pairs_in_the_students_order():
    # auc: (0,1) and (3,0); (1,1) has no teacher AUC, (0,2) is not kept by the teacher.
    ours, theirs, images = paired_values(STUDENT, TEACHER, "auc")
    assert ours.tolist() == [0.75, 0.875] and theirs.tolist() == [0.625, 0.5] and images.tolist() == [0, 3]
    ours, theirs, images = paired_values(STUDENT, TEACHER, "hit")  # hits are defined for (1,1) too
    assert ours.tolist() == [1.0, 1.0, 0.0] and theirs.tolist() == [1.0, 0.0, 1.0] and images.tolist() == [0, 1, 3]


def test_paired_difference_is_the_difference_of_the_means_on_common_pairs():
    assert paired_difference(STUDENT, TEACHER, "auc") == ((0.75 + 0.875) / 2 - (0.625 + 0.5) / 2, 2)
    assert paired_difference(STUDENT, TEACHER, "hit") == pytest.approx((2 / 3 - 2 / 3, 3))
    none = PairTable.from_dict({"image": [5], "class": [0], "kept": [True], "auc": [0.5]})
    difference, count = paired_difference(STUDENT, none, "auc")
    assert math.isnan(difference) and count == 0


def test_compare_attribution_bootstraps_the_per_pair_differences_over_images():
    result = compare_attribution(STUDENT, TEACHER, tolerances=(0, 3), resamples=200, seed=3)
    assert set(result) == {"auc", "pointing", "pointing@3", "cos", "l2", "common_pairs"}
    assert result["common_pairs"] == 2
    assert result["auc"]["estimate"] == pytest.approx((0.125 + 0.375) / 2)
    expected = paired_bootstrap(torch.tensor([0.125, 0.375], dtype=torch.float64), torch.tensor([0, 3]),
                                resamples=200, seed=3).to_dict()
    assert result["auc"] == expected  # the same seeded resamples
    assert result["pointing"]["estimate"] == pytest.approx(0.0) and result["pointing@3"]["estimate"] == 0.0
    # The similarity is the student's mean over its compared pairs (NaN left out).
    assert result["cos"]["estimate"] == pytest.approx(0.5) and result["l2"]["estimate"] == pytest.approx(7 / 12)
    assert result["auc"]["low"] <= result["auc"]["estimate"] <= result["auc"]["high"]


def test_per_class_averages_the_kept_pairs_of_each_class():
    rows = per_class(STUDENT, ["cat", "dog", "bird"])
    # class 0: (3,0) kept; class 1: (0,1), (1,1); class 2: (0,2).  (2,0) is not kept.
    assert [r["class"] for r in rows] == ["cat", "dog", "bird"] and [r["kept"] for r in rows] == [1, 2, 1]
    assert rows[1]["auc"] == pytest.approx((0.75 + 0.625) / 2) and rows[1]["pointing"] == 1.0
    assert rows[1]["cos"] == 0.5  # the NaN of (1,1) is left out
    assert rows[0]["auc"] == 0.875 and rows[2]["cos"] == 0.25
    assert [r["class"] for r in per_class(STUDENT)] == ["0", "1", "2"]
    empty = PairTable.from_dict({"image": [0], "class": [0], "kept": [False], "auc": [NAN], "hit": [NAN],
                                 "cos": [NAN]})
    assert per_class(empty) == []


def test_most_changed_are_the_lowest_cosines_without_nan():
    rows = most_changed(STUDENT, k=2)
    assert [(r["image"], r["class"], r["cos"]) for r in rows] == [(0, 2, 0.25), (0, 1, 0.5)]
    assert rows[0]["auc"] == 0.5
    assert len(most_changed(STUDENT, k=10)) == 3  # only three pairs have a cosine


def test_compare_predictions_top1_difference_on_the_same_images():
    labels = torch.tensor([0, 1, 2, 1])
    teacher = torch.eye(3)[torch.tensor([0, 1, 2, 0])]  # 3 of 4 right
    student = torch.eye(3)[torch.tensor([0, 2, 2, 1])]  # 3 of 4 right, not the same ones
    result = compare_predictions(student, teacher, labels, task="multiclass", resamples=100, seed=0)
    assert set(result) == {"top1", "top5", "agreement"} and result["top1"]["estimate"] == 0.0
    assert result["top5"]["estimate"] == 0.0  # three classes: every class is in the top 5
    assert result["agreement"]["estimate"] == 0.5  # top-1 classes 0,2,2,1 against 0,1,2,0: images 0 and 2 agree
    assert result["top1"]["low"] <= 0.0 <= result["top1"]["high"]
    worse = compare_predictions(torch.eye(3)[torch.tensor([1, 0, 0, 0])], teacher, labels, task="multiclass",
                                resamples=100, seed=0)
    assert worse["top1"]["estimate"] == -0.75
