"""Classification metrics against scikit-learn, including tied scores and degenerate rows."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, top_k_accuracy_score

from apkit.core.errors import ValidationError
from apkit.metrics.classification import (
    average_precision_rows,
    f1_samples,
    per_class_average_precision,
    per_image_average_precision,
    top1_accuracy,
    top1_agreement,
    topk_accuracy,
)


def _random_case(seed, n=40, c=12, levels=None):
    gen = torch.Generator().manual_seed(seed)
    if levels is None:
        scores = torch.randn(n, c, generator=gen, dtype=torch.float64)
    else:  # few distinct values: many ties within rows and columns
        scores = torch.randint(0, levels, (n, c), generator=gen).to(torch.float64) / levels
    labels = (torch.rand(n, c, generator=gen) < 0.3).to(torch.float64)
    labels[:, 0] = 1.0  # every image has a positive
    labels[0, :] = 1.0  # every class has a positive
    return scores, labels


def _sklearn_per_image(scores, labels):
    return np.array([average_precision_score(y, s) for y, s in zip(labels.numpy(), scores.numpy())])


@pytest.mark.parametrize("levels", [None, 2, 3, 5])
def test_per_image_ap_matches_sklearn_with_ties(levels):
    scores, labels = _random_case(levels or 0, levels=levels)
    ours = per_image_average_precision(scores, labels)
    assert ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), _sklearn_per_image(scores, labels), rtol=0, atol=1e-9)


@pytest.mark.parametrize("levels", [None, 2, 4])
def test_per_class_ap_matches_sklearn_with_ties(levels):
    scores, labels = _random_case(10 + (levels or 0), n=60, c=7, levels=levels)
    ours = per_class_average_precision(scores, labels)
    expected = average_precision_score(labels.numpy(), scores.numpy(), average=None)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-9)
    # The macro mean is sklearn's default average.
    assert abs(ours.mean().item() - average_precision_score(labels.numpy(), scores.numpy())) < 1e-9


def test_all_tied_row_is_the_positive_rate():
    scores = torch.full((1, 6), 0.3, dtype=torch.float64)
    labels = torch.tensor([[1, 0, 0, 1, 0, 0]], dtype=torch.float64)
    # One threshold: recall jumps 0 -> 1 at precision 2/6.
    assert per_image_average_precision(scores, labels).item() == pytest.approx(2 / 6, abs=1e-12)
    assert per_image_average_precision(scores, labels).item() == pytest.approx(
        average_precision_score(labels[0].numpy(), scores[0].numpy()), abs=1e-12
    )


def test_single_positive_is_reciprocal_rank_and_tie_group_end():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.1]], dtype=torch.float64)
    # The positive ties with two negatives: its precision is taken at the end of the group (1/4).
    labels = torch.tensor([[0, 0, 1, 0, 0]], dtype=torch.float64)
    assert per_image_average_precision(scores, labels).item() == pytest.approx(1 / 4, abs=1e-12)
    labels = torch.tensor([[0, 0, 0, 0, 1]], dtype=torch.float64)
    assert per_image_average_precision(scores, labels).item() == pytest.approx(1 / 5, abs=1e-12)
    labels = torch.tensor([[1, 0, 0, 0, 0]], dtype=torch.float64)
    assert per_image_average_precision(scores, labels).item() == 1.0


def test_hand_computed_ap():
    # Ranked labels 1,0,1,0,1: precisions at the positives 1, 2/3, 3/5.
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    labels = torch.tensor([[1, 0, 1, 0, 1]])
    expected = (1 + 2 / 3 + 3 / 5) / 3
    assert average_precision_rows(scores, labels).item() == pytest.approx(expected, abs=1e-6)


def test_rows_without_positive_are_nan():
    scores, labels = _random_case(3, n=10, c=5)
    labels[4] = 0.0
    labels[:, 2] = 0.0
    per_image = per_image_average_precision(scores, labels)
    assert torch.isnan(per_image[4]) and not torch.isnan(per_image[[0, 1, 2, 3, 5]]).any()
    per_class = per_class_average_precision(scores, labels)
    assert torch.isnan(per_class[2])
    keep = [0, 1, 3, 4]
    expected = average_precision_score(labels[:, keep].numpy(), scores[:, keep].numpy(), average=None)
    np.testing.assert_allclose(per_class[keep].numpy(), expected, atol=1e-9)


def test_float32_and_bool_labels_agree_with_float64():
    scores, labels = _random_case(5, levels=4)
    ours32 = per_image_average_precision(scores.float(), labels.bool())
    assert ours32.dtype == torch.float32
    np.testing.assert_allclose(ours32.numpy(), _sklearn_per_image(scores, labels), atol=1e-6)


@pytest.mark.parametrize("threshold", [0.5, 0.0])
def test_f1_samples_matches_sklearn(threshold):
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(50, 9, generator=gen, dtype=torch.float64)
    labels = (torch.rand(50, 9, generator=gen) < 0.25).double()
    labels[:3] = 0.0  # some images without labels
    scores[:2] = -5.0  # ... and without predictions: zero_division
    ours = f1_samples(scores, labels, threshold=threshold)
    expected = f1_score(labels.numpy(), (scores >= threshold).numpy(), average="samples", zero_division=0)
    assert ours.mean().item() == pytest.approx(expected, abs=1e-12)
    assert torch.equal(f1_samples(scores[:2], labels[:2], zero_division=1.0), torch.ones(2, dtype=torch.float64))


def test_f1_threshold_is_inclusive_on_logits():
    scores = torch.tensor([[0.5, 0.49]])
    labels = torch.tensor([[1.0, 1.0]])
    assert f1_samples(scores, labels).item() == pytest.approx(2 / 3)


def test_top1_accuracy_indices_and_one_hot():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 6, generator=gen)
    targets = torch.randint(0, 6, (30,), generator=gen)
    ours = top1_accuracy(logits, targets)
    assert ours.mean().item() == pytest.approx(accuracy_score(targets.numpy(), logits.argmax(1).numpy()))
    one_hot = torch.nn.functional.one_hot(targets, 6).float()
    assert torch.equal(top1_accuracy(logits, one_hot), ours)
    # Multi-hot: the top class is correct when it is any of the labels.
    multi = one_hot.clone()
    multi[torch.arange(30), logits.argmax(1)] = 1.0
    assert torch.equal(top1_accuracy(logits, multi), torch.ones(30))


@pytest.mark.parametrize(
    "call",
    [
        lambda: per_image_average_precision(torch.zeros(3, 4), torch.zeros(3, 5)),
        lambda: per_image_average_precision(torch.zeros(3, 4), torch.full((3, 4), 2.0)),
        lambda: per_image_average_precision(torch.tensor([[float("nan"), 0.0]]), torch.ones(1, 2)),
        lambda: per_class_average_precision(torch.zeros(4), torch.zeros(4)),
        lambda: per_class_average_precision(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4)),
        lambda: f1_samples([[0.1]], torch.zeros(1, 1)),
        lambda: f1_samples(torch.zeros(2, 2), torch.zeros(2, 2), threshold=float("inf")),
        lambda: top1_accuracy(torch.zeros(3, 4), torch.tensor([0, 1, 4])),
        lambda: top1_accuracy(torch.zeros(3, 4), torch.tensor([0.0, 1.0, 2.0])),
        lambda: top1_accuracy(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long)),
        lambda: top1_accuracy(torch.zeros(3, 4), torch.zeros(3, 5)),
    ],
)
def test_bad_input_raises_validation_error(call):
    with pytest.raises(ValidationError):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_metrics_run_on_gpu_and_agree_with_cpu():
    scores, labels = _random_case(7, n=200, c=20, levels=6)
    cuda = scores.cuda(), labels.cuda()
    for fn in (per_image_average_precision, per_class_average_precision, f1_samples):
        out = fn(*cuda)
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), fn(scores, labels), equal_nan=True)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_topk_accuracy_equals_scikit_learn(k):
    gen = torch.Generator().manual_seed(k)
    logits = torch.randn(60, 7, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 7, (60,), generator=gen)
    expected = top_k_accuracy_score(labels.numpy(), logits.numpy(), k=k, labels=np.arange(7))
    assert float(topk_accuracy(logits, labels, k).mean()) == pytest.approx(expected, abs=1e-12)
    one_hot = torch.eye(7, dtype=torch.float32)[labels]  # the labels of apkit's single-label datasets
    assert torch.equal(topk_accuracy(logits, one_hot, k), topk_accuracy(logits, labels, k))


def test_topk_accuracy_with_k_above_the_classes_counts_every_image_and_checks_its_input():
    logits = torch.tensor([[0.3, 0.1], [0.0, 2.0]])
    assert topk_accuracy(logits, torch.tensor([1, 0]), 5).tolist() == [1.0, 1.0]
    assert topk_accuracy(logits, torch.tensor([1, 0]), 1).tolist() == [0.0, 0.0]
    for bad, fragment in ((torch.tensor([0, 2]), "class indices"), (torch.zeros(2, 3), "shape of logits")):
        with pytest.raises(ValidationError, match=fragment):
            topk_accuracy(logits, bad, 1)
    with pytest.raises(ValidationError, match="positive integer"):
        topk_accuracy(logits, torch.tensor([0, 1]), 0)


def test_top1_agreement_by_hand():
    student = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0], [0.4, 0.6, 0.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 1.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # top-1 classes 0, 2, 1, 1 against 0, 2, 0, 1: three of four agree
    assert top1_agreement(student, teacher).tolist() == [1.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValidationError, match="same shape"):
        top1_agreement(student, teacher[:, :2])
