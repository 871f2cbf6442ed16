"""The training loop, :func:`fit`: one SGD loop for teachers, distillation and fine-tuning after pruning.

What it minimises is an ``objective(model, images, labels) -> (loss, logits)`` callable (the task
loss by default).  It uses SGD with momentum (or AdamW) and weight decay, a step or cosine learning-rate
schedule, keeps the weights of the best validation epoch, writes a resumable checkpoint after
every epoch (:class:`apkit.training.state.TrainingState`), and runs unchanged under ``torchrun``
(DistributedDataParallel, one process per device).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from apkit.core.distributed import all_reduce_sum, broadcast_buffers, is_distributed, local_device, world_info
from apkit.core.errors import ApkitError, ValidationError
from apkit.core.validation import check_choice, check_dataset, check_int, check_known, check_module, resolve_device
from apkit.training.evaluate import DEFAULT_SELECT, METRIC_NAMES, evaluate, resolve_task, split_batch
from apkit.training.objectives import TaskObjective
from apkit.training.recipes import Recipe
from apkit.training.state import CHECKPOINT_NAME, TrainingState

__all__ = ["FitOptions", "FitResult", "fit", "seed_everything"]

logger = logging.getLogger("apkit.training")


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

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data."""
        return {"history": self.history, "best_epoch": self.best_epoch, "best_metrics": self.best_metrics,
                "select": self.select, "checkpoint": None if self.checkpoint is None else str(self.checkpoint)}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators (all devices)."""
    check_int(seed, "seed", minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _make_scheduler(optimizer, recipe: Recipe):
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(recipe.milestones), gamma=recipe.gamma)


def format_record(record: dict, epochs: int, select: str | None, improved: bool) -> str:
    """The one-line summary of an epoch that ``fit`` logs."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"lr {record['lr']:.3g}", f"loss {record['train_loss']:.4f}"]
    terms = [k for k in record if k.startswith("train_") and k != "train_loss"]
    if len(terms) > 1:  # a single term is the loss itself
        parts.append(" ".join(f"{k[6:]} {record[k]:.4f}" for k in terms))
    val = [k for k in record if k.startswith("val_") and k != "val_num_images"]
    if val:
        parts.append("val " + " ".join(f"{k[4:]} {record[k]:.4f}" for k in val))
    line = "  ".join(parts) + f"  ({record['seconds']:.1f} s)"
    return line + ("  *best" if improved and select else "")


@dataclass(frozen=True)
class FitOptions:
    """How one :func:`fit` run is carried out (its keyword options; the recipe says what is trained).

    Attributes
    ----------
    task : {"multilabel", "multiclass"}, optional
        Defaults to ``train_set.task``, else the task its labels show (integers: ``"multiclass"``).
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
    channels_last : bool
        Train in the channels-last memory format (about 1.4x faster convolutions on CPUs).  The
        model is given back in the standard format.
    """

    task: str | None = None
    device: str | torch.device | None = None
    seed: int = 0
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    progress: bool = True
    select: str | None = None
    eval_batch_size: int = 100
    num_workers: int = 0
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_int(self.seed, "seed", minimum=0)
        check_int(self.eval_batch_size, "eval_batch_size", minimum=1)
        check_int(self.num_workers, "num_workers", minimum=0)
        if self.resume and self.checkpoint_dir is None:
            raise ValidationError("resume=True needs checkpoint_dir (the folder of the checkpoint to resume)")

    @classmethod
    def from_keywords(cls, options: Mapping[str, Any]) -> FitOptions:
        """The options of ``fit(..., **options)``; an unknown keyword is refused with the known ones."""
        check_known(options, "fit option", [f.name for f in dataclasses.fields(cls)])
        return cls(**options)


def fit(
    model: nn.Module,
    train_set: Any,
    recipe: Recipe | Mapping[str, Any],
    *,
    val_set: Any = None,
    objective: Callable | None = None,
    on_step: Callable[[nn.Module, int], None] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    **options: Any,
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
    recipe : Recipe or dict
        Epochs, learning rate and schedule, batch size, optimiser (SGD or AdamW), momentum and weight decay
        (:class:`apkit.training.Recipe`; a dict of its fields is made into one).  Under torchrun
        each process loads ``batch_size / W`` images per step; a resumed run trains the missing
        epochs.
    objective : callable, optional
        ``objective(model, images, labels) -> (loss, logits)``; default: the task loss
        (:class:`apkit.training.objectives.TaskObjective`).  An ``nn.Module`` objective is moved
        to ``device``.  If it sets ``last_terms`` (dict name -> scalar) after each call, the epoch
        means are logged as ``train_<name>``; if its ``needs_indices`` is true, it is called with
        ``indices=`` (the batch's dataset indices) too.
    on_step : callable, optional
        ``on_step(model, step)`` after every optimiser step (e.g. to re-apply pruning masks).
    on_epoch_end : callable, optional
        ``on_epoch_end(record)`` after every epoch, once its checkpoint is written.
    **options
        How the run is carried out: ``task``, ``device``, ``seed``, ``checkpoint_dir``,
        ``resume``, ``progress``, ``select``, ``eval_batch_size``, ``num_workers``,
        ``channels_last`` (see :class:`FitOptions`).

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
    >>> result = fit(net, data, Recipe(epochs=3, lr=0.5, batch_size=8), val_set=data, device="cpu", progress=False)
    >>> [r["epoch"] for r in result.history], result.best_metrics["map_class"] > 0.9
    ([1, 2, 3], True)
    """
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.from_dict(recipe)
    run = FitOptions.from_keywords(options)
    settings, objective = _check_fit(model, train_set, val_set=val_set, recipe=recipe, run=run, objective=objective,
                                     callbacks=(on_step, on_epoch_end))
    select = settings["select"]
    rank, _ = world_info()
    show = run.progress and rank == 0
    device = _place(model, objective, run)
    optimizer = _optimizer(model, recipe)
    scheduler = _make_scheduler(optimizer, recipe)
    path = Path(run.checkpoint_dir) / CHECKPOINT_NAME if run.checkpoint_dir is not None else None
    state = TrainingState(path, settings, device)
    _start(state, model, optimizer, scheduler, run=run, show=show)
    loop = _EpochLoop(model, objective, optimizer, train_set=train_set, settings=settings, device=device, run=run,
                      on_step=on_step, show=show)
    was_training = model.training
    try:
        for epoch in range(state.epoch, recipe.epochs):
            began = time.perf_counter()
            record = loop.run(epoch)
            scheduler.step()
            broadcast_buffers(model)  # every process holds rank 0's BatchNorm statistics
            improved = False
            if val_set is not None:
                metrics = evaluate(model, val_set, task=settings["task"], device=device,
                                   batch_size=run.eval_batch_size, num_workers=run.num_workers)
                record.update({f"val_{k}": v for k, v in metrics.items()})
                improved = state.observe(model, epoch + 1, metrics, metrics[select])
            record["seconds"] = time.perf_counter() - began
            state.history.append(record)
            state.save(model, optimizer, scheduler)
            _log(record, epochs=recipe.epochs, select=select, improved=improved, main=rank == 0, show=show)
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        loop.close()
        model.train(was_training)
        if run.channels_last:
            model.to(memory_format=torch.contiguous_format)
    return _result(model, state, select, path)


def _check_fit(model, train_set, *, val_set, recipe: Recipe, run: FitOptions, objective,
               callbacks) -> tuple[dict[str, Any], Callable]:
    """Check the arguments of :func:`fit` the recipe and options do not; return the run's settings and objective.

    The settings are stored in the training checkpoint and compared when it is resumed.
    """
    check_module(model)
    check_dataset(train_set, "train_set")
    if val_set is not None:
        check_dataset(val_set, "val_set")
    task = resolve_task(run.task, train_set)
    for name, fn in zip(("objective", "on_step", "on_epoch_end"), (objective, *callbacks)):
        if fn is not None and not callable(fn):
            raise ValidationError(f"{name} must be callable, got {type(fn).__name__}")
    select = None
    if val_set is not None:
        select = DEFAULT_SELECT[task] if run.select is None else run.select
        check_choice(select, "select metric", [m for m in METRIC_NAMES[task] if m != "loss"])
    world = world_info()[1]
    if recipe.batch_size % world:
        raise ValidationError(f"batch_size ({recipe.batch_size}) must be divisible by the number of processes "
                              f"({world})")
    settings = {"task": task, **recipe.to_dict(), "seed": run.seed, "world_size": world, "select": select}
    return settings, TaskObjective(task) if objective is None else objective


def _place(model: nn.Module, objective: Callable, run: FitOptions) -> torch.device:
    """Move the model (in the memory format asked for) and a module objective to the run's device."""
    device = local_device(resolve_device(run.device))
    model.to(device)
    if run.channels_last:
        model.to(memory_format=torch.channels_last)
    if isinstance(objective, nn.Module):
        objective.to(device)
    return device


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValidationError("model has no trainable parameters (all have requires_grad=False)")
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def _start(state: TrainingState, model: nn.Module, optimizer, scheduler, *, run: FitOptions, show: bool) -> None:
    """Resume from the run's checkpoint when asked and it exists; otherwise seed the random generators."""
    if run.resume and state.path.is_file():
        state.restore(model, optimizer, scheduler)
        if show:
            tqdm.write(f"resumed from {state.path} after epoch {state.epoch}", file=sys.stderr)
    else:
        # Each process draws its own dropout and augmentation; rank 0 draws what a single process would.
        seed_everything(run.seed + world_info()[0])


class _WithIndex(torch.utils.data.Dataset):
    """``(image, label, index)`` items, for an objective that reads per-image data (a teacher cache) by index."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        return item[0], item[1], index


class _EpochLoop:
    """One epoch of optimiser steps over the (shared-out) training set, and the epoch's mean loss terms."""

    def __init__(self, model, objective, optimizer, *, train_set, settings, device, run: FitOptions, on_step, show):
        rank, world = world_info()
        self.model, self.objective, self.optimizer, self.train_set = model, objective, optimizer, train_set
        self.settings, self.device, self.channels_last, self.on_step, self.show = (
            settings, device, run.channels_last, on_step, show)
        self.train_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
            if is_distributed() else model
        # One sampler for one or many processes: its shuffle depends only on (seed, epoch), which makes
        # the order of a resumed epoch the order of an uninterrupted one.
        self.sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                          seed=settings["seed"])
        self.local_batch = settings["batch_size"] // world
        self.num_workers = run.num_workers
        self.with_indices = bool(getattr(objective, "needs_indices", False))

    def close(self) -> None:
        self.train_model = None  # drops the DistributedDataParallel hooks

    def run(self, epoch: int) -> dict[str, Any]:
        rank, _ = world_info()
        seed = self.settings["seed"]
        self.sampler.set_epoch(epoch)
        loader = DataLoader(
            _WithIndex(self.train_set) if self.with_indices else self.train_set, batch_size=self.local_batch,
            sampler=self.sampler, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed((seed * 100003 + epoch) * 1009 + rank),
        )
        step = epoch * math.ceil(len(self.sampler) / self.local_batch)
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        seen = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.settings['epochs']}", leave=False, disable=not self.show)
        for batch in bar:
            images, labels = split_batch(batch, self.device)
            if self.channels_last and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            self.optimizer.zero_grad(set_to_none=True)
            extra = {"indices": batch[2]} if self.with_indices else {}
            loss, _ = self.objective(self.train_model, images, labels, **extra)
            loss.backward()
            self.optimizer.step()
            step += 1
            if self.on_step is not None:
                self.on_step(self.model, step)
            seen += images.shape[0]
            terms = {"loss": loss.detach(), **(getattr(self.objective, "last_terms", None) or {})}
            for name, value in terms.items():
                value = torch.as_tensor(value, dtype=torch.float64, device=self.device).detach() * images.shape[0]
                totals[name] = totals[name] + value if name in totals else value
            if self.show and step % 10 == 0:  # reading the loss waits for the device: not every step
                bar.set_postfix(loss=f"{totals['loss'].item() / seen:.4f}")
        bar.close()
        names = sorted(totals)
        summed = all_reduce_sum(torch.stack([totals[k] for k in names] +
                                            [torch.tensor(float(seen), dtype=torch.float64, device=self.device)]))
        record.update({f"train_{k}": (summed[i] / summed[-1]).item() for i, k in enumerate(names)})
        if not math.isfinite(record["train_loss"]):
            raise ApkitError(
                f"the training loss became {record['train_loss']} in epoch {epoch + 1}; "
                "lower the learning rate (lr) or check the data for invalid values"
            )
        return record


def _log(record: dict, *, epochs: int, select: str | None, improved: bool, main: bool, show: bool) -> None:
    if main:
        line = format_record(record, epochs, select, improved)
        logger.info(line)
        if show:
            tqdm.write(line, file=sys.stderr)


def _result(model: nn.Module, state: TrainingState, select: str | None, path: Path | None) -> FitResult:
    result = FitResult(history=state.history, best_epoch=state.best_epoch, best_metrics=state.best_metrics,
                       select=select, checkpoint=path)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    elif result.history:
        result.best_epoch = result.history[-1]["epoch"]
    return result
