"""Targets: the forms as_pairs accepts and refuses, and the pairs each target policy selects."""

import pytest
import torch

from apkit.attribution.targets import as_pairs, target_pairs
from apkit.core.errors import UnknownNameError, ValidationError


def test_as_pairs_accepts_an_int_one_class_per_image_and_pairs():
    assert as_pairs(5, 3).tolist() == [[0, 5], [1, 5], [2, 5]]
    assert as_pairs(torch.tensor(2), 2).tolist() == [[0, 2], [1, 2]]  # a 0-d tensor is one class for every image
    assert as_pairs([4, 0], 2).tolist() == [[0, 4], [1, 0]]  # a list becomes a tensor
    pairs = torch.tensor([[1, 3], [0, 7], [1, 0]])
    assert torch.equal(as_pairs(pairs, 2), pairs)  # pairs are kept in their order
    assert as_pairs(torch.tensor([3, 1], dtype=torch.int32), 2).dtype == torch.long
    assert as_pairs(torch.zeros(0, 2, dtype=torch.long), 2).shape == (0, 2)  # no pair at all is allowed


@pytest.mark.parametrize("target,fragment", [
    (None, "must be an int, a LongTensor"),
    (True, "must be an int, a LongTensor"),
    ("cat", "integer class indices"),
    (torch.tensor([1.0, 2.0]), "integer class indices, got dtype torch.float32"),
    (torch.tensor([True, False]), "got dtype torch.bool"),
    (torch.zeros(1, 1, 1, dtype=torch.long), "rank 0 or 1 or 2"),
    (torch.tensor([1, 2, 3]), r"target of shape \(3,\) must give one class per image \(2 images\)"),
    (torch.tensor([[0, 1, 2]]), r"pairs must have shape \(M, 2\), got \(1, 3\)"),
    (torch.tensor([[0, 1], [2, 1]]), r"image indices must be in 0..1, got 0..2"),
    (torch.tensor([[-1, 1]]), r"image indices must be in 0..1, got -1..-1"),
    (torch.tensor([[0, -3]]), "class indices must be >= 0, got -3"),
])
def test_as_pairs_refuses_what_cannot_be_pairs(target, fragment):
    with pytest.raises(ValidationError, match=fragment):
        as_pairs(target, 2)


def test_target_policies():
    labels = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert target_pairs("label", labels=labels).tolist() == [[0, 1], [0, 2], [1, 0]]
    assert target_pairs("label", labels=torch.tensor([2, 0])).tolist() == [[0, 2], [1, 0]]
    logits = torch.tensor([[0.1, 0.5, -1.0], [2.0, 0.0, 1.0]])
    assert target_pairs("own", logits=logits).tolist() == [[0, 1], [1, 0]]
    assert target_pairs("teacher", teacher_logits=logits.flip(1)).tolist() == [[0, 1], [1, 2]]
    with pytest.raises(ValidationError, match="needs teacher_logits"):
        target_pairs("teacher", logits=logits)
    with pytest.raises(UnknownNameError, match="label, own, teacher"):
        target_pairs("random", labels=labels)


def test_top_label_is_the_labelled_class_scored_highest():
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    logits = torch.tensor([[0.5, 9.0, 0.7], [0.1, 0.3, 0.2], [5.0, -2.0, 4.0]])
    # Image 0: class 2 beats class 0 (class 1 scores higher but is not a label); image 1 has no label: its
    # top-1; image 2: its only label even though it scores lowest.
    assert target_pairs("top_label", labels=labels, logits=logits).tolist() == [[0, 2], [1, 1], [2, 1]]
    assert target_pairs("top_label", labels=torch.tensor([2, 0, 1]), logits=logits).tolist() == [
        [0, 2], [1, 0], [2, 1]]
    with pytest.raises(ValidationError, match="needs logits"):
        target_pairs("top_label", labels=labels)
    with pytest.raises(ValidationError, match="needs labels=multi-hot"):
        target_pairs("label")
