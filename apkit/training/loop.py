"""The training loop (:func:`fit`) and the classification evaluation (:func:`evaluate`).

One loop serves teacher training, distillation and fine-tuning after pruning: what it minimises
is an ``objective(model, images, labels) -> (loss, logits)`` callable (the task loss by default).
It uses SGD with momentum and weight decay, a step or cosine learning-rate schedule, keeps the
weights of the best validation epoch, writes a resumable checkpoint after every epoch, and runs
unchanged under ``torchrun`` (DistributedDataParallel, one process per device).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from apkit._validation import check_choice, check_float, check_int, resolve_device
from apkit.errors import ApkitError, CheckpointError, ValidationError
from apkit.metrics.classification import (
    f1_samples,
    per_class_average_precision,
    per_image_average_precision,
    top1_accuracy,
)
from apkit.models.checkpoint import atomic_save, safe_load
from apkit.training.distributed import (
    all_gather_objects,
    all_gather_rows,
    all_reduce_sum,
    broadcast_buffers,
    is_distributed,
    local_device,
    world_info,
)
from apkit.training.objectives import TASKS, TaskObjective, task_loss

__all__ = ["CHECKPOINT_NAME", "FitResult", "METRIC_NAMES", "evaluate", "fit", "seed_everything"]

logger = logging.getLogger("apkit.training")

SCHEDULES = ("step", "cosine")
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "apkit-training-state"
# Metrics evaluate() returns per task; all but "loss" are better when higher.
METRIC_NAMES = {"multilabel": ("map_class", "map_image", "f1", "loss"), "multiclass": ("top1", "loss")}
DEFAULT_SELECT = {"multilabel": "map_class", "multiclass": "top1"}
# Settings that must match for a checkpoint to be resumed (epochs may grow, except for cosine).
_RESUME_KEYS = ("task", "batch_size", "lr", "momentum", "weight_decay", "milestones", "gamma", "schedule",
                "seed", "world_size", "select")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    history : list of dict
        One record per epoch: ``epoch`` (1-based), ``lr``, ``train_loss``, the objective's terms as
        ``train_<name>``, validation metrics as ``val_<name>``, ``seconds``.
    best_epoch : int or None
        The epoch whose weights the model holds now (the best validation epoch, or the last one
        without a validation set).
    best_metrics : dict
        Validation metrics of ``best_epoch`` (empty without a validation set).
    select : str or None
        The validation metric that chose ``best_epoch``.
    checkpoint : pathlib.Path or None
        The resumable training checkpoint, if one was written.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_metrics: dict = field(default_factory=dict)
    select: str | None = None
    checkpoint: Path | None = None

    @property
    def last(self) -> dict:
        """The record of the last epoch."""
        return self.history[-1] if self.history else {}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators (all devices)."""
    check_int(seed, "seed", minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _resolve_task(task: str | None, dataset: Any) -> str:
    if task is None:
        task = getattr(dataset, "task", "multilabel")
    return check_choice(task, "task", TASKS)


def _check_dataset(dataset: Any, name: str) -> None:
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ValidationError(f"{name} must be a map-style dataset (with __getitem__ and __len__), "
                              f"got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValidationError(f"{name} is empty; it must hold at least one example")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _split_batch(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Items are (image, label, mask) or (image, label); the mask is not needed to classify.
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise ValidationError("dataset items must be (image, label, ...) tuples")
    non_blocking = device.type == "cuda"
    return batch[0].to(device, non_blocking=non_blocking), batch[1].to(device, non_blocking=non_blocking)


# --------------------------------------------------------------------------------------------- evaluate


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
        Defaults to ``dataset.task``, else ``"multilabel"``.
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
    _check_dataset(dataset, "dataset")
    task = _resolve_task(task, dataset)
    device = local_device(resolve_device(device))
    check_int(batch_size, "batch_size", minimum=1)
    check_int(num_workers, "num_workers", minimum=0)
    threshold = check_float(threshold, "threshold")
    model = _unwrap(model)

    rank, world = world_info()
    # A disjoint, unpadded share per process, so that the gathered results are exactly the dataset.
    indices = range(rank, len(dataset), world) if world > 1 else None
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")

    was_training = model.training
    previous = next(iter(model.parameters()), torch.empty(0)).device
    model.to(device).eval()
    logits_all, labels_all = [], []
    try:
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not (progress and rank == 0)):
            images, labels = _split_batch(batch, device)
            logits_all.append(model(images).float())
            labels_all.append(labels)
    finally:
        model.train(was_training)
        if previous != device:
            model.to(previous)
    logits = torch.cat(logits_all) if logits_all else torch.empty(0, device=device)
    labels = torch.cat(labels_all) if labels_all else torch.empty(0, device=device)
    return _classification_metrics(logits, labels, task=task, threshold=threshold)


def _classification_metrics(logits: torch.Tensor, labels: torch.Tensor, *, task: str,
                            threshold: float) -> dict[str, float]:
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


# --------------------------------------------------------------------------------------------- fit


def _rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # NumPy's key array is stored as a tensor: checkpoints hold tensors and plain data only.
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _make_scheduler(optimizer, schedule: str, epochs: int, milestones: Sequence[int], gamma: float):
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def _check_milestones(milestones: Sequence[int]) -> tuple[int, ...]:
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise ValidationError(f"milestones must be a sequence of epochs, got {milestones!r}")
    values = tuple(check_int(m, "each milestone", minimum=1) for m in milestones)
    if list(values) != sorted(set(values)):
        raise ValidationError(f"milestones must be strictly increasing, got {list(values)}")
    return values


def _format_record(record: dict, epochs: int, select: str | None, improved: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"lr {record['lr']:.3g}", f"loss {record['train_loss']:.4f}"]
    terms = [k for k in record if k.startswith("train_") and k != "train_loss"]
    if len(terms) > 1:  # a single term is the loss itself
        parts.append(" ".join(f"{k[6:]} {record[k]:.4f}" for k in terms))
    val = [k for k in record if k.startswith("val_") and k != "val_num_images"]
    if val:
        parts.append("val " + " ".join(f"{k[4:]} {record[k]:.4f}" for k in val))
    line = "  ".join(parts) + f"  ({record['seconds']:.1f} s)"
    return line + ("  *best" if improved and select else "")


def fit(
    model: nn.Module,
    train_set: Any,
    *,
    val_set: Any = None,
    task: str | None = None,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    schedule: str = "step",
    objective: Callable | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    select: str | None = None,
    eval_batch_size: int = 100,
    num_workers: int = 0,
    on_step: Callable[[nn.Module, int], None] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    channels_last: bool = False,
) -> FitResult:
    """Train ``model`` with SGD on ``train_set``; keep the weights of the best validation epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place and moved to ``device``.  Models carrying ``torch.nn.utils.prune``
        masks train (only unmasked weights change) and checkpoint as they are.
    train_set, val_set : Dataset
        Items ``(image, label, ...)``.  With ``val_set``, the model is evaluated after every epoch
        and the weights of the best epoch are restored at the end.
    task : {"multilabel", "multiclass"}, optional
        Defaults to ``train_set.task``, else ``"multilabel"``.
    epochs : int
        Total number of epochs (a resumed run trains the missing ones).
    batch_size : int
        Images per optimiser step, over all processes under torchrun (each loads ``batch_size / W``).
    lr, momentum, weight_decay : float
        SGD settings.
    milestones, gamma : sequence of int, float
        ``schedule="step"``: the rate is multiplied by ``gamma`` after each epoch in ``milestones``
        (none: a constant rate).
    schedule : {"step", "cosine"}
        Learning-rate schedule; ``"cosine"`` decays to 0 over ``epochs``.
    objective : callable, optional
        ``objective(model, images, labels) -> (loss, logits)``; default: the task loss
        (:class:`apkit.training.objectives.TaskObjective`).  An ``nn.Module`` objective is moved
        to ``device``.  If it sets ``last_terms`` (dict name -> scalar) after each call, the epoch
        means are logged as ``train_<name>``.
    device : str or torch.device, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None`` picks CUDA when available.
    seed : int
        Seeds Python, NumPy and torch and the shuffling; a run is reproducible on CPU.
    checkpoint_dir : path, optional
        Write ``checkpoint_dir/checkpoint.pt`` (atomically) after every epoch: weights,
        optimiser, schedule, random states, history and best weights.
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.pt`` if it exists (start afresh if not).  The
        resumed run ends with exactly the result of an uninterrupted one.
    progress : bool
        Show a progress bar per epoch and print a one-line summary per epoch (on stderr).
    select : str, optional
        Validation metric that picks the best epoch (higher is better); default ``"map_class"``
        for multilabel, ``"top1"`` for multiclass.
    eval_batch_size, num_workers : int
        Batch size of the evaluation; DataLoader workers.
    on_step : callable, optional
        ``on_step(model, step)`` after every optimiser step (e.g. to re-apply pruning masks).
    on_epoch_end : callable, optional
        ``on_epoch_end(record)`` after every epoch, once its checkpoint is written.
    channels_last : bool
        Train in the channels-last memory format (about 1.4x faster convolutions on CPUs).  The
        model is given back in the standard format.

    Returns
    -------
    FitResult

    Notes
    -----
    Under ``torchrun`` (a process group initialised before the call), the model is wrapped in
    DistributedDataParallel, the data is split with a DistributedSampler, validation metrics are
    those of the whole validation set, and only rank 0 writes checkpoints and prints.  Every
    process must call ``fit`` with the same arguments; ``device="cuda"`` means each process's
    own GPU (``LOCAL_RANK``).

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> x = torch.randn(32, 4)
    >>> data = TensorDataset(x, (x[:, :2] > 0).float())
    >>> net = torch.nn.Linear(4, 2)
    >>> result = fit(net, data, val_set=data, epochs=3, batch_size=8, lr=0.5, device="cpu", progress=False)
    >>> [r["epoch"] for r in result.history], result.best_metrics["map_class"] > 0.9
    ([1, 2, 3], True)
    """
    if not isinstance(model, nn.Module):
        raise ValidationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_dataset(train_set, "train_set")
    if val_set is not None:
        _check_dataset(val_set, "val_set")
    task = _resolve_task(task, train_set)
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_float(lr, "lr", minimum=0.0, exclusive_minimum=True)
    momentum = check_float(momentum, "momentum", minimum=0.0, maximum=1.0, exclusive_maximum=True)
    weight_decay = check_float(weight_decay, "weight_decay", minimum=0.0)
    milestones = _check_milestones(milestones)
    gamma = check_float(gamma, "gamma", minimum=0.0, maximum=1.0, exclusive_minimum=True)
    check_choice(schedule, "schedule", SCHEDULES)
    check_int(seed, "seed", minimum=0)
    check_int(eval_batch_size, "eval_batch_size", minimum=1)
    check_int(num_workers, "num_workers", minimum=0)
    for name, fn in (("objective", objective), ("on_step", on_step), ("on_epoch_end", on_epoch_end)):
        if fn is not None and not callable(fn):
            raise ValidationError(f"{name} must be callable, got {type(fn).__name__}")
    if val_set is not None:
        select = DEFAULT_SELECT[task] if select is None else select
        check_choice(select, "select metric", [m for m in METRIC_NAMES[task] if m != "loss"])
    else:
        select = None
    if resume and checkpoint_dir is None:
        raise ValidationError("resume=True needs checkpoint_dir (the folder of the checkpoint to resume)")

    rank, world = world_info()
    if batch_size % world:
        raise ValidationError(f"batch_size ({batch_size}) must be divisible by the number of processes ({world})")
    device = local_device(resolve_device(device))
    main = rank == 0
    show = progress and main

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    objective = TaskObjective(task) if objective is None else objective
    if isinstance(objective, nn.Module):
        objective.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValidationError("model has no trainable parameters (all have requires_grad=False)")
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = _make_scheduler(optimizer, schedule, epochs, milestones, gamma)
    settings = {"task": task, "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
                "weight_decay": weight_decay, "milestones": list(milestones), "gamma": gamma, "schedule": schedule,
                "seed": seed, "world_size": world, "select": select}

    result = FitResult(select=select)
    best_value, best_state = -math.inf, None
    start_epoch = 0
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    result.checkpoint = path
    if resume and path.is_file():
        start_epoch, best_value, best_state = _restore(path, model, optimizer, scheduler, settings, result, device)
        if show:
            tqdm.write(f"resumed from {path} after epoch {start_epoch}", file=sys.stderr)
    else:
        # Each process draws its own dropout and augmentation; rank 0 draws what a single process would.
        seed_everything(seed + rank)

    train_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if is_distributed() else model
    # One sampler for one or many processes: its shuffle depends only on (seed, epoch), which makes
    # the order of a resumed epoch the order of an uninterrupted one.
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    was_training = model.training
    step = start_epoch * math.ceil(len(sampler) / (batch_size // world))
    try:
        for epoch in range(start_epoch, epochs):
            began = time.perf_counter()
            sampler.set_epoch(epoch)
            loader = DataLoader(
                train_set, batch_size=batch_size // world, sampler=sampler, num_workers=num_workers,
                pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed((seed * 100003 + epoch) * 1009 + rank),
            )
            lr_now = optimizer.param_groups[0]["lr"]
            model.train()
            totals: dict[str, torch.Tensor] = {}
            seen = 0
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not show)
            for batch in bar:
                images, labels = _split_batch(batch, device)
                if channels_last and images.dim() == 4:
                    images = images.contiguous(memory_format=torch.channels_last)
                optimizer.zero_grad(set_to_none=True)
                loss, _ = objective(train_model, images, labels)
                loss.backward()
                optimizer.step()
                step += 1
                if on_step is not None:
                    on_step(model, step)
                n = images.shape[0]
                seen += n
                terms = {"loss": loss.detach()}
                terms.update(getattr(objective, "last_terms", None) or {})
                for name, value in terms.items():
                    value = torch.as_tensor(value, dtype=torch.float64, device=device).detach() * n
                    totals[name] = totals[name] + value if name in totals else value
                if show and step % 10 == 0:  # reading the loss waits for the device: not every step
                    bar.set_postfix(loss=f"{totals['loss'].item() / seen:.4f}")
            bar.close()
            scheduler.step()

            names = sorted(totals)
            summed = all_reduce_sum(torch.stack([totals[k] for k in names] +
                                                [torch.tensor(float(seen), dtype=torch.float64, device=device)]))
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr_now}
            record.update({f"train_{k}": (summed[i] / summed[-1]).item() for i, k in enumerate(names)})
            if not math.isfinite(record["train_loss"]):
                raise ApkitError(
                    f"the training loss became {record['train_loss']} in epoch {epoch + 1}; "
                    "lower the learning rate (lr) or check the data for invalid values"
                )
            broadcast_buffers(model)  # every process holds rank 0's BatchNorm statistics
            improved = False
            if val_set is not None:
                metrics = evaluate(model, val_set, task=task, device=device, batch_size=eval_batch_size,
                                   num_workers=num_workers)
                record.update({f"val_{k}": v for k, v in metrics.items()})
                value = metrics[select]
                improved = best_state is None or value > best_value  # NaN never beats a number
                if improved:
                    best_value = -math.inf if math.isnan(value) else value
                    best_state = _cpu_state_dict(model)
                    result.best_epoch, result.best_metrics = epoch + 1, metrics
            record["seconds"] = time.perf_counter() - began
            result.history.append(record)
            if path is not None:
                _save(path, model, optimizer, scheduler, settings, result, best_value, best_state, device, main)
            if main:
                line = _format_record(record, epochs, select, improved)
                logger.info(line)
                if show:
                    tqdm.write(line, file=sys.stderr)
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        del train_model  # drops the DistributedDataParallel hooks
        model.train(was_training)
        if channels_last:
            model.to(memory_format=torch.contiguous_format)

    if best_state is not None:
        model.load_state_dict(best_state)
    elif result.history:
        result.best_epoch = result.history[-1]["epoch"]
    return result


def _save(path, model, optimizer, scheduler, settings, result, best_value, best_state, device, main) -> None:
    rng = all_gather_objects(_rng_state(device))  # every process resumes with its own random state
    if not main:
        return
    atomic_save({
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "epoch": result.history[-1]["epoch"],
        "settings": settings,
        "model": _cpu_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "history": copy.deepcopy(result.history),
        "best": {"epoch": result.best_epoch, "metrics": dict(result.best_metrics), "value": best_value,
                 "state_dict": best_state},
    }, path)


def _restore(path, model, optimizer, scheduler, settings, result, device) -> tuple[int, float, dict | None]:
    payload = safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an apkit training checkpoint; pass another checkpoint_dir "
                              "or resume=False")
    saved = payload["settings"]
    keys = _RESUME_KEYS + (("epochs",) if settings["schedule"] == "cosine" else ())
    changed = [f"{k} {saved.get(k)!r} -> {settings[k]!r}" for k in keys if saved.get(k) != settings[k]]
    if changed:
        raise CheckpointError(
            f"cannot resume {str(path)!r}: settings changed ({'; '.join(changed)}); "
            "use the same settings, another checkpoint_dir, or resume=False"
        )
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"the training checkpoint {str(path)!r} does not fit this model: {exc}") from exc
    scheduler.load_state_dict(payload["scheduler"])
    rank = world_info()[0]
    _set_rng_state(payload["rng"][rank], device)
    result.history = list(payload["history"])
    best = payload["best"]
    result.best_epoch, result.best_metrics = best["epoch"], dict(best["metrics"])
    return int(payload["epoch"]), float(best["value"]), best["state_dict"]
