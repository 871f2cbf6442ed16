"""The classification evaluation: the paper's predictive metrics of a model over a dataset (METHOD §4.1)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from apkit.core.distributed import all_gather_rows, all_reduce_sum, local_device, world_info
from apkit.core.errors import ValidationError
from apkit.core.modules import evaluating, unwrap
from apkit.core.names import TASK_NAMES
from apkit.core.validation import check_choice, check_dataset, check_float, check_int, check_module, resolve_device
from apkit.metrics.classification import (
    f1_samples,
    per_class_average_precision,
    per_image_average_precision,
    top1_accuracy,
)
from apkit.training.objectives import task_loss

__all__ = ["DEFAULT_SELECT", "METRIC_NAMES", "classification_metrics", "evaluate", "num_classes_of", "predict",
           "resolve_task", "split_batch"]

# Metrics evaluate() returns per task; all but "loss" are better when higher.
METRIC_NAMES = {"multilabel": ("map_class", "map_image", "f1", "loss"), "multiclass": ("top1", "loss")}
# The validation metric that picks the best epoch by default.
DEFAULT_SELECT = {"multilabel": "map_class", "multiclass": "top1"}


def _label_of(dataset: Any) -> Any:
    """The label of the dataset's first item, or ``None`` when it cannot be read."""
    try:
        item = dataset[0]
    except Exception:  # noqa: BLE001 - an unreadable item is reported where the data is used
        return None
    return item[1] if isinstance(item, (tuple, list)) and len(item) >= 2 else None


def resolve_task(task: str | None, dataset: Any) -> str:
    """``task``, else the dataset's ``task`` attribute, else the task its labels show; checked.

    A dataset without a ``task`` attribute (a plain torchvision or PyTorch dataset) is read once:
    an integer label (a Python or NumPy int, or an integer tensor) means a single-label
    (``"multiclass"``) task; any other label, e.g. a multi-hot float vector, ``"multilabel"``.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> resolve_task(None, TensorDataset(torch.zeros(4, 3), torch.tensor([0, 2, 1, 0])))
    'multiclass'
    >>> resolve_task(None, TensorDataset(torch.zeros(4, 3), torch.eye(4, 3)))
    'multilabel'
    """
    if task is None:
        task = getattr(dataset, "task", None)
    if task is None:
        label = _label_of(dataset)
        integer = isinstance(label, (int, np.integer)) and not isinstance(label, bool)
        if isinstance(label, torch.Tensor):
            integer = label.dim() == 0 and not label.is_floating_point() and label.dtype != torch.bool
        task = "multiclass" if integer else "multilabel"
    return check_choice(task, "task", TASK_NAMES)


def num_classes_of(dataset: Any) -> int | None:
    """The class count of a dataset: ``num_classes``, else ``len(classes)``, else the largest of its
    ``targets`` + 1 (torchvision's datasets have them); ``None`` when none is there.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> num_classes_of(SimpleNamespace(classes=["cat", "dog", "fox"])), num_classes_of(SimpleNamespace(targets=[0, 4]))
    (3, 5)
    """
    if getattr(dataset, "num_classes", None) is not None:
        return int(dataset.num_classes)
    if getattr(dataset, "classes", None) is not None:
        return len(dataset.classes)
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets):
        return int(max(int(t) for t in targets)) + 1
    return None


def split_batch(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a batch of ``(image, label, ...)`` items (the mask is not needed to classify)."""
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise ValidationError("dataset items must be (image, label, ...) tuples")
    non_blocking = device.type == "cuda"
    return batch[0].to(device, non_blocking=non_blocking), batch[1].to(device, non_blocking=non_blocking)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    task: str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 100,
    threshold: float = 0.5,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Classification metrics of ``model`` on ``dataset`` (the paper's predictive metrics, METHOD §4.1).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (run in eval mode; its mode is restored afterwards).
    dataset : Dataset
        Items ``(image, label, ...)``; labels multi-hot (multilabel) or one-hot (multiclass).
    task : {"multilabel", "multiclass"}, optional
        Defaults to ``dataset.task``, else the task the labels show (:func:`resolve_task`).
    device : str or torch.device, optional
        Where to run (``None``: CUDA if available).  A model on another device is moved there
        for the evaluation and moved back afterwards.
    batch_size : int
        Images per forward pass (per process under torchrun).
    threshold : float
        Logit threshold of the F1 score (the paper uses 0.5 on raw logits).
    num_workers : int
        DataLoader worker processes.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        Multilabel: ``map_image`` (the paper's "mAP": per-image AP averaged over images that have
        a label), ``map_class`` (standard per-class mAP over classes present in the data), ``f1``
        (samples-averaged), ``loss`` (task loss), ``num_images``.  Multiclass: ``top1``, ``loss``,
        ``num_images``.  Under torchrun every process evaluates a disjoint share and every process
        returns the metrics of the whole dataset.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.eye(4), torch.eye(4))
    >>> metrics = evaluate(torch.nn.Identity(), data, task="multilabel", device="cpu")
    >>> metrics["map_class"], metrics["map_image"], metrics["f1"]
    (1.0, 1.0, 1.0)
    """
    task = resolve_task(task, dataset)
    threshold = check_float(threshold, "threshold")
    logits, labels = predict(model, dataset, device=device, batch_size=batch_size, num_workers=num_workers,
                             progress=progress)
    return classification_metrics(logits, labels, task=task, threshold=threshold)


@torch.no_grad()
def predict(model: nn.Module, dataset: Any, *, device: str | torch.device | None = None, batch_size: int = 100,
            num_workers: int = 0, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's float logits and the labels of this process's share of ``dataset``, in dataset order.

    Under torchrun each process predicts a disjoint, unpadded share (images ``rank, rank + W, ...``);
    in one process, every image.  :func:`evaluate` turns them into metrics.

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> logits, labels = predict(torch.nn.Identity(), TensorDataset(torch.eye(3), torch.eye(3)), device="cpu")
    >>> logits.shape, bool(torch.equal(logits, labels))
    (torch.Size([3, 3]), True)
    """
    check_dataset(dataset)
    device = local_device(resolve_device(device))
    check_int(batch_size, "batch_size", minimum=1)
    check_int(num_workers, "num_workers", minimum=0)
    model = unwrap(check_module(model))
    rank, world = world_info()
    # A disjoint, unpadded share per process, so that the gathered results are exactly the dataset.
    indices = range(rank, len(dataset), world) if world > 1 else None
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    logits_all, labels_all = [], []
    with evaluating(model, device=device):
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not (progress and rank == 0)):
            images, labels = split_batch(batch, device)
            logits_all.append(model(images).float())
            labels_all.append(labels)
    logits = torch.cat(logits_all) if logits_all else torch.empty(0, device=device)
    labels = torch.cat(labels_all) if labels_all else torch.empty(0, device=device)
    return logits, labels


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, *, task: str,
                           threshold: float = 0.5) -> dict[str, float]:
    """The metrics :func:`evaluate` returns, from predictions already made (this process's share)."""
    # Sums and counts are added over processes; per-class AP needs every score, so those are gathered.
    # Metrics are computed in float64 (exact counts and precisions; float32 logits convert exactly).
    dtype = torch.float64 if logits.device.type != "mps" else torch.float32
    logits = logits.to(dtype)
    if task == "multilabel":
        if logits.numel():
            per_image = per_image_average_precision(logits, labels)
            f1 = f1_samples(logits, labels, threshold=threshold)
            loss = task_loss(logits, labels, task=task, reduction="sum")
        else:  # an empty share under torchrun
            per_image = f1 = torch.empty(0, device=logits.device)
            loss = torch.zeros((), device=logits.device)
        has_label = ~torch.isnan(per_image)
        sums = torch.stack([
            per_image[has_label].to(dtype).sum(), has_label.sum().to(dtype), f1.to(dtype).sum(),
            loss.to(dtype), torch.tensor(float(logits.shape[0]), dtype=dtype, device=logits.device),
        ])
        sums = all_reduce_sum(sums)
        all_logits, all_labels = all_gather_rows(logits), all_gather_rows(labels)
        per_class = per_class_average_precision(all_logits, all_labels.to(all_logits.dtype))
        n = sums[4].item()
        return {
            "map_class": torch.nanmean(per_class.to(dtype)).item(),
            "map_image": (sums[0] / sums[1]).item() if sums[1] > 0 else math.nan,
            "f1": (sums[2] / n).item(),
            "loss": (sums[3] / n).item(),
            "num_images": int(n),
        }
    if logits.numel():
        hits = top1_accuracy(logits, labels)
        loss = task_loss(logits, labels, task=task, reduction="sum")
    else:
        hits, loss = torch.empty(0, device=logits.device), torch.zeros((), device=logits.device)
    sums = all_reduce_sum(torch.stack([
        hits.to(dtype).sum(), loss.to(dtype), torch.tensor(float(logits.shape[0]), dtype=dtype, device=logits.device),
    ]))
    n = sums[2].item()
    return {"top1": (sums[0] / n).item(), "loss": (sums[1] / n).item(), "num_images": int(n)}
