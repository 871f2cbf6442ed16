"""From names and files to runs: train a model on a dataset spec (``apkit train``), size data to a model.

* :func:`train_model` trains a registered model on a dataset spec and writes ``model.pt`` and
  ``metrics.json``; it returns a :class:`TrainingReport`.
* :func:`datasets_for` builds the splits a trained model is compressed or audited on: the
  synthetic images at the model's input size, the class count checked.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from apkit.core.distributed import is_main_process
from apkit.core.errors import ValidationError
from apkit.core.io import atomic_write_json, check_writable
from apkit.core.validation import resolve_device
from apkit.core.version import __version__
from apkit.data import DATASETS, check_synthetic_only, from_spec, spec_name
from apkit.models import MODELS, create, save_checkpoint
from apkit.training.loop import check_train_settings, fit, seed_everything
from apkit.training.recipes import RECIPES

__all__ = ["TrainingReport", "datasets_for", "default_model", "default_recipe", "train_model"]

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"


@dataclass
class TrainingReport:
    """What :func:`train_model` did: the content of ``metrics.json``.

    Attributes
    ----------
    val : dict
        Validation metrics of the saved weights.
    best_epoch : int or None
    select : str or None
        The validation metric that picked the saved epoch.
    seconds : float
    settings : dict
        Model, data, recipe and seed.
    history : list of dict
        One record per epoch (see :class:`apkit.training.FitResult`).
    paths : dict
        ``model``, ``metrics`` and ``training_checkpoint`` files.
    """

    val: dict[str, float]
    best_epoch: int | None
    select: str | None
    seconds: float
    settings: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data (what ``metrics.json`` holds)."""
        return dataclasses.asdict(self)


def datasets_for(model: nn.Module, data: str, sizes: Mapping[str, int | None], **options) -> dict[str, Dataset]:
    """The splits ``sizes`` (``{split: number of images or None}``) of ``data`` as ``model`` needs them.

    Synthetic images are rendered at the model's input size (from its ``apkit_config``), and a
    model whose class count is not the data's is refused.  ``sizes`` other than ``None`` apply to
    the synthetic data only.
    """
    DATASETS.get(spec_name(data))  # an unknown name is the problem, not the sizes given with it
    check_synthetic_only(data, **{f"{split}_samples": n for split, n in sizes.items()})
    input_size = getattr(model, "apkit_config", {}).get("options", {}).get("input_size")
    if spec_name(data) == "synthetic" and input_size is not None:
        options.setdefault("image_size", input_size)
    splits = {split: from_spec(data, split=split, **options, **({"num_samples": n} if n is not None else {}))
              for split, n in sizes.items()}
    classes = getattr(model, "apkit_config", {}).get("num_classes")
    for dataset in splits.values():
        if classes is not None and classes != dataset.num_classes:
            raise ValidationError(f"the model has {classes} classes but the data has {dataset.num_classes}; "
                                  "use a model trained on this dataset")
    return splits


def _check_out_dir(out_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """The output folder, checked before any work: writable, and not holding a finished run unless asked."""
    if resume and overwrite:
        raise ValidationError("resume and overwrite exclude each other: resume continues the run in out_dir, "
                              "overwrite replaces it; pass one of them")
    out_dir = check_writable(out_dir)
    if (out_dir / METRICS_FILE).is_file() and not (resume or overwrite):
        raise ValidationError(
            f"{str(out_dir)!r} already holds a trained model ({MODEL_FILE}, {METRICS_FILE}); pass resume=True "
            "(--resume) to reuse it, overwrite=True (--overwrite) to train afresh over it, or another out_dir (--out)"
        )
    return out_dir


def default_recipe(data: str) -> str:
    """The recipe ``apkit train`` uses for ``data``: ``"synthetic"`` for the embedded data, else the paper's."""
    return "synthetic" if data == "synthetic" else "teacher"


def default_model(data: str) -> str:
    """The architecture ``apkit train`` uses for ``data``: the small VGG for the embedded data, else VGG16-BN."""
    return "vgg_small" if data == "synthetic" else "vgg16_bn"


def train_model(
    model: str | None = None,
    data: str = "synthetic",
    *,
    out_dir: str | Path,
    recipe: str | None = None,
    overrides: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    device: str | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    select: str | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> TrainingReport:
    """Train ``model`` on the ``train`` split of ``data``, keep its best ``val`` epoch, save it.

    Parameters
    ----------
    model : str, optional
        A name of :data:`apkit.models.MODELS`; default :func:`default_model`.  VGG input sizes
        follow the data's image size.
    data : str
        ``"synthetic"``, ``"voc:ROOT"`` or ``"imagenet-seg:ROOT"`` (see :func:`apkit.data.from_spec`).
    out_dir : path
        Receives ``model.pt`` (:func:`apkit.models.save_checkpoint`, with dataset, metrics and
        settings in its meta), ``metrics.json`` and ``training/checkpoint.pt`` (to resume).
    recipe : str, optional
        A name of :data:`apkit.training.RECIPES`; default :func:`default_recipe`.
    overrides : dict, optional
        Recipe fields to change (``epochs``, ``lr``, ``batch_size``, ``momentum``, ``weight_decay``,
        ``milestones``, ``gamma``, ``schedule``); ``None`` values are ignored.
    model_options, data_options : dict, optional
        Extra options of :func:`apkit.models.create` and :func:`apkit.data.from_spec`.
    train_samples, val_samples : int, optional
        Synthetic data only: number of images per split.
    device, seed, resume, select, num_workers, progress
        As in :func:`apkit.training.fit`; ``resume`` also reuses a finished run in ``out_dir``.
    overwrite : bool
        Train afresh over a finished run in ``out_dir`` (one with ``metrics.json``), which is
        refused otherwise: its model would be lost.

    Returns
    -------
    TrainingReport
        What ``metrics.json`` holds: ``val`` (metrics of the saved weights), ``best_epoch``,
        ``history``, ``settings``, ``seconds``, ``paths``.
    """
    model = default_model(data) if model is None else model
    builder = MODELS.get(model)  # an unknown name fails before any data is read
    recipe_name = default_recipe(data) if recipe is None else recipe
    chosen = RECIPES.get(recipe_name)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(chosen)})
    if unknown:
        raise ValidationError(f"unknown training settings {unknown}; choose from {sorted(chosen.kwargs())}")
    if "milestones" in changes:
        changes["milestones"] = tuple(changes["milestones"])
    chosen = dataclasses.replace(chosen, **changes)
    check_train_settings(**chosen.kwargs())  # a bad epoch count stops here, before any data is read

    data_options = dict(data_options or {})
    sizes = {"train": train_samples, "val": val_samples}
    DATASETS.get(spec_name(data))  # an unknown name is the problem, not the sizes given with it
    check_synthetic_only(data, train_samples=train_samples, val_samples=val_samples)
    out_dir = _check_out_dir(out_dir, resume, overwrite)
    began = time.perf_counter()
    splits = {
        split: from_spec(data, split=split, **data_options, **({"num_samples": n} if n is not None else {}))
        for split, n in sizes.items()
    }
    train_set, val_set = splits["train"], splits["val"]

    options = dict(model_options or {})
    if "input_size" in inspect.signature(builder).parameters and "input_size" not in options:
        options["input_size"] = int(train_set.image_size)
    seed_everything(seed)  # the initial weights depend on the seed too
    net = create(model, num_classes=train_set.num_classes, **options)

    result = fit(
        net, train_set, val_set=val_set, task=train_set.task, **chosen.kwargs(), device=device, seed=seed,
        checkpoint_dir=out_dir / "training", resume=resume, progress=progress, select=select,
        num_workers=num_workers, channels_last=resolve_device(device).type == "cpu",  # faster CPU convolutions
    )
    seconds = time.perf_counter() - began
    settings = {"model": model, "model_options": options, "data": data, "data_options": data_options,
                "sizes": {"train": len(train_set), "val": len(val_set)}, "recipe": recipe_name, **chosen.kwargs(),
                "milestones": list(chosen.milestones), "seed": seed, "select": result.select,
                "apkit_version": __version__}
    report = TrainingReport(
        val=result.best_metrics, best_epoch=result.best_epoch, select=result.select, seconds=seconds,
        settings=settings, history=result.history,
        paths={"model": str(out_dir / MODEL_FILE), "metrics": str(out_dir / METRICS_FILE),
               "training_checkpoint": str(out_dir / "training" / "checkpoint.pt")},
    )
    meta = {"dataset": data, "classes": list(train_set.classes), "task": train_set.task,
            "mean": list(getattr(train_set, "mean", ())), "std": list(getattr(train_set, "std", ())),
            "image_size": int(train_set.image_size), "metrics": result.best_metrics, "best_epoch": result.best_epoch,
            "settings": settings}
    if is_main_process():  # under torchrun, one process writes
        save_checkpoint(net, out_dir / MODEL_FILE, meta=meta)
        atomic_write_json(out_dir / METRICS_FILE, report.to_dict())
    return report
