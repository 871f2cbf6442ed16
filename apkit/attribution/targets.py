"""Targets: which (image, class) pairs to explain.

Every method works on a LongTensor of pairs ``(M, 2)`` = (image_index, class_index).
:func:`as_pairs` turns the accepted target forms (a ``target``: an int, one class per image, or
pairs) into pairs; :func:`target_pairs` turns a ``target_policy`` ("label", "own", "teacher",
"top_label"; see :data:`apkit.core.names.TARGET_POLICY_NAMES`) into pairs.
"""

from __future__ import annotations

import torch

from apkit.core.errors import ValidationError
from apkit.core.names import TARGET_POLICY_NAMES
from apkit.core.validation import check_choice, check_tensor


def as_pairs(target: object, num_images: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Normalise ``target`` to (image_index, class_index) pairs.

    Parameters
    ----------
    target : int, sequence or LongTensor
        An int (one class for every image), ``(N,)`` (one class per image) or ``(M, 2)`` pairs.
    num_images : int
        Number of images in the batch the pairs index.
    device : torch.device, optional
        Device of the returned tensor (the inputs' device).

    Returns
    -------
    LongTensor (M, 2)

    Examples
    --------
    >>> as_pairs(torch.tensor([3, 1]), 2).tolist()
    [[0, 3], [1, 1]]
    >>> as_pairs(5, 2).tolist()
    [[0, 5], [1, 5]]
    """
    target = _class_indices(target, num_images).to(device=device, dtype=torch.long)
    if target.dim() == 0:
        target = target.expand(num_images)
    if target.dim() == 1:
        target = _one_class_per_image(target, num_images)
    _check_pairs(target, num_images)
    return target


def _class_indices(target: object, num_images: int) -> torch.Tensor:
    """``target`` as an integer tensor of rank 0, 1 or 2 (an int becomes one class per image)."""
    if isinstance(target, bool) or target is None:
        raise ValidationError(f"target must be an int, a LongTensor (N,) or (M, 2) pairs, got {target!r}")
    if isinstance(target, int):
        target = torch.full((num_images,), target, dtype=torch.long)
    elif not isinstance(target, torch.Tensor):
        try:
            target = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValidationError(f"target must be integer class indices, got {target!r}") from exc
    target = check_tensor(target, "target", ndim=(0, 1, 2))
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValidationError(f"target must hold integer class indices, got dtype {target.dtype}")
    return target


def _one_class_per_image(classes: torch.Tensor, num_images: int) -> torch.Tensor:
    """Pairs ``(i, classes[i])`` from one class index per image."""
    if len(classes) != num_images:
        raise ValidationError(
            f"target of shape ({len(classes)},) must give one class per image ({num_images} images); "
            "for several classes per image pass (image_index, class_index) pairs of shape (M, 2)"
        )
    return torch.stack([torch.arange(num_images, device=classes.device), classes], 1)


def _check_pairs(pairs: torch.Tensor, num_images: int) -> None:
    """Refuse pairs that are not ``(M, 2)`` or index an image or class that cannot exist."""
    if pairs.shape[1] != 2:
        raise ValidationError(f"target pairs must have shape (M, 2), got {tuple(pairs.shape)}")
    if not pairs.numel():
        return
    first, last = int(pairs[:, 0].min()), int(pairs[:, 0].max())
    if first < 0 or last >= num_images:
        raise ValidationError(f"target image indices must be in 0..{num_images - 1}, got {first}..{last}")
    if int(pairs[:, 1].min()) < 0:
        raise ValidationError(f"target class indices must be >= 0, got {int(pairs[:, 1].min())}")


def target_pairs(
    target_policy: str,
    *,
    labels: torch.Tensor | None = None,
    logits: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """The (image, class) pairs a target policy selects.

    Parameters
    ----------
    target_policy : {"label", "own", "teacher", "top_label"}
        ``"label"``: every ground-truth class of each image (the paper's localization protocol);
        ``"own"``: the model's top-1 class; ``"teacher"``: the teacher's top-1 class (the
        regularizer's and the ImageNet protocol's choice); ``"top_label"``: the ground-truth
        class the model scores highest, one per image (ROAR on labelled data).
    labels : Tensor, optional
        Needed for "label" and "top_label": multi-hot ``(N, C)`` or class indices ``(N,)``.
    logits : Tensor (N, C), optional
        Needed for "own" and "top_label": the explained model's outputs.
    teacher_logits : Tensor (N, C), optional
        Needed for "teacher".

    Returns
    -------
    LongTensor (M, 2)
        Pairs sorted by image, then class.

    Examples
    --------
    >>> labels = torch.tensor([[1., 0., 1.], [0., 1., 0.]])
    >>> target_pairs("label", labels=labels).tolist()
    [[0, 0], [0, 2], [1, 1]]
    >>> logits = torch.tensor([[0.1, 2.0, 0.5], [3.0, -1.0, 0.0]])
    >>> target_pairs("own", logits=logits).tolist()
    [[0, 1], [1, 0]]
    >>> target_pairs("top_label", labels=labels, logits=logits).tolist()
    [[0, 2], [1, 1]]
    """
    check_choice(target_policy, "target policy", TARGET_POLICY_NAMES)
    needs = {"label": ("labels",), "own": ("logits",), "teacher": ("teacher_logits",),
             "top_label": ("labels", "logits")}[target_policy]
    given = {"labels": labels, "logits": logits, "teacher_logits": teacher_logits}
    for name in needs:
        if given[name] is None:
            shape = "multi-hot (N, C) or (N,) class indices" if name == "labels" else "(N, C)"
            raise ValidationError(f"target policy {target_policy!r} needs {name}={shape}")
    if target_policy in ("label", "top_label"):
        labels = check_tensor(labels, "labels", ndim=(1, 2))
        if labels.dim() == 1:
            return as_pairs(labels, len(labels), device=labels.device)
        if target_policy == "label":
            return torch.nonzero(labels > 0).to(torch.long)
        # The labelled class the model scores highest (its top-1 when an image has no label).
        scores = check_tensor(logits, "logits", ndim=2)
        top = scores.masked_fill(labels.to(scores.device) <= 0, float("-inf")).argmax(1)
        top = torch.where((labels > 0).any(1).to(top.device), top, scores.argmax(1))
        return torch.stack([torch.arange(len(top), device=top.device), top], 1)
    name = "logits" if target_policy == "own" else "teacher_logits"
    scores = check_tensor(given[name], name, ndim=2)
    top = scores.argmax(1)
    return torch.stack([torch.arange(len(top), device=top.device), top], 1)
