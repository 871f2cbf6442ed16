"""Classification metrics over batched score tensors: average precision, F1, top-k accuracy, agreement.

Every function takes ``(N, C)`` scores (logits or probabilities; only their order matters for
average precision) and returns one value per image or per class, on the input's device, NaN where
the value is undefined.  Averaging is a separate step, e.g. ``torch.nanmean``.

The paper's "mAP" is :func:`per_image_average_precision` averaged over images (a label-ranking
AP computed for each image over its classes); the usual per-class mAP of PASCAL VOC is
:func:`per_class_average_precision` averaged over classes.  Both equal scikit-learn's
``average_precision_score`` (tied scores form one threshold), computed with one sort for all rows
at once instead of a Python loop.
"""

from __future__ import annotations

import torch

from apkit.core.errors import ValidationError
from apkit.core.validation import check_float, check_same_device, check_tensor

__all__ = [
    "average_precision_rows",
    "f1_samples",
    "per_class_average_precision",
    "per_image_average_precision",
    "tie_group_ends",
    "top1_accuracy",
    "top1_agreement",
    "topk_accuracy",
]


def _check_scores_labels(scores: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    scores = check_tensor(scores, "scores", ndim=2, floating=True, finite=True)
    labels = check_tensor(labels, "labels", ndim=2)
    if scores.shape != labels.shape:
        raise ValidationError(
            f"scores and labels must have the same shape (images, classes), got {tuple(scores.shape)} "
            f"and {tuple(labels.shape)}"
        )
    check_same_device(scores, labels, "scores", "labels")
    if labels.dtype != torch.bool and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValidationError("labels must be binary (0/1 or bool multi-hot), got other values")
    return scores, labels


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    # Counts and precisions in at least float32; float64 input stays float64.
    return torch.promote_types(dtype, torch.float32)


def average_precision_rows(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Average precision of each row of ``scores`` against the binary ``labels`` of that row.

    AP = sum over thresholds t of (R_t - R_{t-1}) * P_t, where the thresholds are the distinct
    scores of the row (tied scores are one threshold, as in scikit-learn), R is recall and P is
    precision.  Equivalently: the mean over positive entries of the precision at the end of the
    entry's tie group.  Rows without a positive label give NaN.

    Parameters
    ----------
    scores : torch.Tensor
        ``(R, K)`` real scores, higher means more likely positive.
    labels : torch.Tensor
        ``(R, K)`` binary labels (bool, or 0/1 of any dtype).

    Returns
    -------
    torch.Tensor
        ``(R,)`` average precision per row.

    Examples
    --------
    >>> import torch
    >>> average_precision_rows(torch.tensor([[0.9, 0.8, 0.1]]), torch.tensor([[1, 0, 1]]))
    tensor([0.8333])
    """
    scores, labels = _check_scores_labels(scores, labels)
    return _average_precision_rows(scores, labels)


def _average_precision_rows(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    dtype = _accumulation_dtype(scores.dtype)
    rows, k = scores.shape
    if k == 0:
        return torch.full((rows,), float("nan"), dtype=dtype, device=scores.device)
    order = torch.argsort(scores, dim=1, descending=True)
    sorted_scores = torch.gather(scores, 1, order)
    positive = torch.gather(labels.to(dtype), 1, order)

    true_positives = torch.cumsum(positive, dim=1)
    ranks = torch.arange(1, k + 1, device=scores.device, dtype=dtype)
    precision = true_positives / ranks

    # Each entry takes the precision at the last position of its tie group.
    group_precision = torch.gather(precision, 1, tie_group_ends(sorted_scores))

    num_positive = true_positives[:, -1]
    ap = (group_precision * positive).sum(dim=1) / num_positive
    return torch.where(num_positive > 0, ap, torch.full_like(ap, float("nan")))


def tie_group_ends(sorted_scores: torch.Tensor) -> torch.Tensor:
    """For scores sorted along their last dimension, the position of the last entry of each entry's tie group.

    Tied scores form one threshold of a ranking metric: every entry of a group of equal scores
    takes the value at the end of its group.  Positions where the next score differs (or the row
    ends) close a group; a reversed running minimum of those positions gives every entry the end
    of its group.

    Parameters
    ----------
    sorted_scores : torch.Tensor
        ``(..., K)`` scores, sorted (descending) along the last dimension.

    Returns
    -------
    torch.Tensor
        ``(..., K)`` int64 positions in ``0..K-1``.

    Examples
    --------
    >>> tie_group_ends(torch.tensor([0.9, 0.5, 0.5, 0.5, 0.1]))
    tensor([0, 3, 3, 3, 4])
    """
    k = sorted_scores.shape[-1]
    closes = torch.ones_like(sorted_scores, dtype=torch.bool)
    closes[..., :-1] = sorted_scores[..., :-1] != sorted_scores[..., 1:]
    position = torch.arange(k, device=sorted_scores.device).expand(sorted_scores.shape)
    group_end = torch.where(closes, position, torch.full_like(position, k))
    return torch.flip(torch.cummin(torch.flip(group_end, [-1]), dim=-1).values, [-1])


def per_image_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's per-image AP: for each image, the AP of its class scores against its labels.

    Equals ``sklearn.metrics.average_precision_score(labels[i], scores[i])`` for every image
    ``i``; the paper's "mAP" is the mean over images.  NaN for an image without a positive label.

    Parameters
    ----------
    scores : torch.Tensor
        ``(N, C)`` class scores (logits work: only their order matters).
    labels : torch.Tensor
        ``(N, C)`` multi-hot labels.

    Returns
    -------
    torch.Tensor
        ``(N,)`` average precision per image.

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.3, 0.2]])
    >>> labels = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    >>> per_image_average_precision(scores, labels)
    tensor([1.0000, 0.3333])
    """
    return average_precision_rows(scores, labels)


def per_class_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Standard per-class AP: for each class, the AP of its scores over all images.

    Equals ``sklearn.metrics.average_precision_score(labels, scores, average=None)``; the usual
    VOC-style mAP is the mean over classes.  NaN for a class without a positive image.

    Parameters
    ----------
    scores : torch.Tensor
        ``(N, C)`` class scores.
    labels : torch.Tensor
        ``(N, C)`` multi-hot labels.

    Returns
    -------
    torch.Tensor
        ``(C,)`` average precision per class.

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.2], [0.4, 0.8], [0.6, 0.1]])
    >>> labels = torch.tensor([[1, 0], [0, 1], [1, 0]])
    >>> per_class_average_precision(scores, labels)
    tensor([1., 1.])
    """
    scores, labels = _check_scores_labels(scores, labels)
    return _average_precision_rows(scores.t(), labels.t())


def f1_samples(
    scores: torch.Tensor, labels: torch.Tensor, *, threshold: float = 0.5, zero_division: float = 0.0
) -> torch.Tensor:
    """Per-image F1 of the predictions ``scores >= threshold`` against multi-hot ``labels``.

    The mean over images equals ``sklearn.metrics.f1_score(labels, scores >= threshold,
    average="samples")``.  The paper thresholds raw logits at 0.5 (a probability of about 0.62).

    Parameters
    ----------
    scores : torch.Tensor
        ``(N, C)`` scores (logits in the paper's protocol).
    labels : torch.Tensor
        ``(N, C)`` multi-hot labels.
    threshold : float
        A class is predicted when its score is at least ``threshold``.
    zero_division : float
        Value for an image with neither a label nor a prediction (scikit-learn's default is 0).

    Returns
    -------
    torch.Tensor
        ``(N,)`` F1 per image: 2 TP / (2 TP + FP + FN).

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.7, 0.6, -1.0], [0.2, 0.9, 0.0]])
    >>> labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    >>> f1_samples(scores, labels)
    tensor([0.5000, 1.0000])
    """
    scores, labels = _check_scores_labels(scores, labels)
    threshold = check_float(threshold, "threshold")
    zero_division = float(zero_division)
    dtype = _accumulation_dtype(scores.dtype)
    predicted = (scores >= threshold).to(dtype)
    truth = labels.to(dtype)
    true_positives = (predicted * truth).sum(dim=1)
    denominator = predicted.sum(dim=1) + truth.sum(dim=1)  # = 2 TP + FP + FN
    f1 = 2 * true_positives / denominator.clamp(min=1)
    return torch.where(denominator > 0, f1, torch.full_like(f1, zero_division))


def top1_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1.0 where the highest-scoring class is correct, else 0.0, per image.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C)`` class scores.
    targets : torch.Tensor
        ``(N,)`` integer class indices, or ``(N, C)`` one-hot / multi-hot labels (then the top
        class is correct when it is one of the image's labels).

    Returns
    -------
    torch.Tensor
        ``(N,)`` float hits (the mean is the top-1 accuracy).

    Examples
    --------
    >>> import torch
    >>> logits = torch.tensor([[0.1, 2.0, 0.3], [1.5, 0.2, 0.1]])
    >>> top1_accuracy(logits, torch.tensor([1, 2]))
    tensor([1., 0.])
    """
    logits = check_tensor(logits, "logits", ndim=2, floating=True, finite=True)
    targets = check_tensor(targets, "targets", ndim=(1, 2))
    check_same_device(logits, targets, "logits", "targets")
    dtype = _accumulation_dtype(logits.dtype)
    predicted = logits.argmax(dim=1)
    if targets.dim() == 1:
        if targets.shape[0] != logits.shape[0]:
            raise ValidationError(
                f"targets must have one class index per row of logits ({logits.shape[0]}), "
                f"got {targets.shape[0]}"
            )
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise ValidationError(f"targets of shape (N,) must be integer class indices, got {targets.dtype}")
        if bool(((targets < 0) | (targets >= logits.shape[1])).any()):
            raise ValidationError(f"targets must be class indices in [0, {logits.shape[1] - 1}]")
        return (predicted == targets).to(dtype)
    if targets.shape != logits.shape:
        raise ValidationError(
            f"targets of rank 2 must have the shape of logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    return (torch.gather(targets, 1, predicted[:, None]).squeeze(1) > 0).to(dtype)


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int = 5) -> torch.Tensor:
    """1.0 where the image's class is among the ``k`` highest-scoring classes, else 0.0, per image.

    Ties are broken as :func:`torch.topk` breaks them.  ``k`` larger than the number of classes
    counts every class (every image is a hit).

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C)`` class scores.
    targets : torch.Tensor
        ``(N,)`` integer class indices, or ``(N, C)`` one-hot labels (the class is the label's
        highest entry).
    k : int
        How many top classes count.

    Returns
    -------
    torch.Tensor
        ``(N,)`` float hits (the mean is the top-k accuracy, scikit-learn's ``top_k_accuracy_score``).

    Examples
    --------
    >>> import torch
    >>> logits = torch.tensor([[0.1, 2.0, 0.3], [1.5, 0.2, 0.1]])
    >>> topk_accuracy(logits, torch.tensor([2, 2]), k=2)
    tensor([1., 0.])
    """
    logits = check_tensor(logits, "logits", ndim=2, floating=True, finite=True)
    targets = check_tensor(targets, "targets", ndim=(1, 2))
    check_same_device(logits, targets, "logits", "targets")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValidationError(f"k must be a positive integer, e.g. 5, got {k!r}")
    if targets.dim() == 2:
        if targets.shape != logits.shape:
            raise ValidationError(f"one-hot targets must have the shape of logits {tuple(logits.shape)}, "
                                  f"got {tuple(targets.shape)}")
        targets = targets.argmax(dim=1)
    top1_accuracy(logits, targets)  # checks the class indices
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == targets[:, None]).any(dim=1).to(_accumulation_dtype(logits.dtype))


def top1_agreement(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """1.0 where two models' top-1 classes agree, else 0.0, per image (e.g. a student and its teacher).

    Examples
    --------
    >>> import torch
    >>> top1_agreement(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([[0.0, 3.0], [0.0, 1.0]]))
    tensor([1., 0.])
    """
    logits = check_tensor(logits, "logits", ndim=2, floating=True)
    reference_logits = check_tensor(reference_logits, "reference_logits", ndim=2, floating=True)
    if logits.shape != reference_logits.shape:
        raise ValidationError(f"both models' logits must have the same shape, got {tuple(logits.shape)} and "
                              f"{tuple(reference_logits.shape)}; compare models of the same classes on the same images")
    check_same_device(logits, reference_logits, "logits", "reference_logits")
    agree = logits.argmax(dim=1) == reference_logits.argmax(dim=1)
    return agree.to(_accumulation_dtype(logits.dtype))
