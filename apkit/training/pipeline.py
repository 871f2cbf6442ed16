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
from apkit.core.errors import ValidationError, unknown_name
from apkit.core.io import atomic_write_json, check_out_dir
from apkit.core.validation import resolve_device
from apkit.core.version import __version__
from apkit.data import DATASETS, check_synthetic_only, from_spec, spec_name
from apkit.models import MODELS, create, save_checkpoint
from apkit.models.checkpoint import MODEL_FILE
from apkit.training.loop import FitOptions, FitResult, fit, seed_everything
from apkit.training.recipes import RECIPES, Recipe
from apkit.training.state import CHECKPOINT_NAME

__all__ = ["TrainingReport", "datasets_for", "default_model", "default_recipe", "resolve_recipe", "train_model"]

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

    Images are read or rendered at the model's input size (from its ``apkit_config``) unless
    ``image_size`` is given, and a
    model whose class count is not the data's is refused.  ``sizes`` other than ``None`` apply to
    the synthetic data only.  ``options`` are dataset options: ``image_size``, ``mean`` and
    ``std`` (:data:`apkit.data.INPUT_OPTIONS`) for data read from files, ``None`` meaning the
    dataset's default (pass what :func:`apkit.models.recorded_input` found for the model to use
    the input it was trained on).

    Examples
    --------
    >>> from apkit import models
    >>> net = models.create("vgg_small", num_classes=8, input_size=48)
    >>> datasets_for(net, "synthetic", {"val": 4})["val"].image_size
    48
    """
    DATASETS.get(spec_name(data))  # an unknown name is the problem, not the sizes given with it
    check_synthetic_only(data, **{f"{split}_samples": n for split, n in sizes.items()})
    options = {k: v for k, v in options.items() if v is not None}
    input_size = getattr(model, "apkit_config", {}).get("options", {}).get("input_size")
    if spec_name(data) == "synthetic":
        given = [k for k in ("mean", "std") if k in options]
        if given:
            raise ValidationError(f"{' and '.join(given)} apply only to data read from files, not to the synthetic "
                                  "data (it has its own normalisation); drop them")
    if input_size is not None:  # a model built for one input size reads its data at that size
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
    """The output folder, checked before any work: writable, and not holding a trained model unless asked."""
    return check_out_dir(out_dir, resume=resume, overwrite=overwrite,
                         finished=lambda folder: (folder / METRICS_FILE).is_file(),
                         holds=f"a trained model ({MODEL_FILE}, {METRICS_FILE})", reuse="reuse it",
                         redo="train afresh over it")


def default_recipe(data: str) -> str:
    """The recipe ``apkit train`` uses for ``data``: ``"synthetic"`` for the embedded data, else the paper's."""
    return "synthetic" if data == "synthetic" else "teacher"


def default_model(data: str) -> str:
    """The architecture ``apkit train`` uses for ``data``: the small VGG for the embedded data, else VGG16-BN."""
    return "vgg_small" if data == "synthetic" else "vgg16_bn"


#: The options of :func:`train_model` that it hands to :func:`apkit.training.fit` as they are.
RUN_OPTIONS = ("device", "seed", "resume", "select", "num_workers", "progress")


def resolve_recipe(recipe: str | None, data: str, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """The recipe of a training run: ``recipe`` (a name of :data:`RECIPES`; ``None`` for
    :func:`default_recipe`) with ``overrides`` applied (``None`` values are ignored).

    Examples
    --------
    >>> resolve_recipe(None, "synthetic", {"epochs": 2, "lr": None}).epochs
    2
    """
    chosen = RECIPES.get(default_recipe(data) if recipe is None else recipe)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    return chosen.replace(**changes) if changes else chosen


def train_model(
    model: str | None = None,
    data: str = "synthetic",
    *,
    out_dir: str | Path,
    recipe: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    model_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    overwrite: bool = False,
    **options: Any,
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
    overwrite : bool
        Train afresh over a finished run in ``out_dir`` (one with ``metrics.json``), which is
        refused otherwise: its model would be lost.
    **options
        ``device``, ``seed``, ``resume``, ``select``, ``num_workers``, ``progress``: as in
        :func:`apkit.training.fit`; ``resume`` also reuses a finished run in ``out_dir``.

    Returns
    -------
    TrainingReport
        What ``metrics.json`` holds: ``val`` (metrics of the saved weights), ``best_epoch``,
        ``history``, ``settings``, ``seconds``, ``paths``.
    """
    model = default_model(data) if model is None else model
    builder = MODELS.get(model)  # an unknown name fails before any data is read
    recipe_name = default_recipe(data) if recipe is None else recipe
    chosen = resolve_recipe(recipe, data, overrides)  # a bad epoch count stops here, before any data is read
    for key in options:
        if key not in RUN_OPTIONS:
            raise unknown_name(key, "option of train_model", RUN_OPTIONS)
    run = FitOptions.from_keywords({**options, "checkpoint_dir": Path(out_dir) / "training"})

    data_options = dict(data_options or {})
    DATASETS.get(spec_name(data))  # an unknown name is the problem, not the sizes given with it
    check_synthetic_only(data, train_samples=train_samples, val_samples=val_samples)
    out_dir = _check_out_dir(out_dir, run.resume, overwrite)
    began = time.perf_counter()
    splits = {
        split: from_spec(data, split=split, **data_options, **({"num_samples": n} if n is not None else {}))
        for split, n in {"train": train_samples, "val": val_samples}.items()
    }
    train_set, val_set = splits["train"], splits["val"]

    model_options = dict(model_options or {})
    if "input_size" in inspect.signature(builder).parameters and "input_size" not in model_options:
        model_options["input_size"] = int(train_set.image_size)
    seed_everything(run.seed)  # the initial weights depend on the seed too
    net = create(model, num_classes=train_set.num_classes, **model_options)

    run = dataclasses.replace(run, task=train_set.task,
                              channels_last=resolve_device(run.device).type == "cpu")  # faster CPU convolutions
    result = fit(net, train_set, chosen, val_set=val_set, **dataclasses.asdict(run))
    seconds = time.perf_counter() - began
    settings = {"model": model, "model_options": model_options, "data": data, "data_options": data_options,
                "sizes": {"train": len(train_set), "val": len(val_set)}, "recipe": recipe_name, **chosen.to_dict(),
                "seed": run.seed, "select": result.select, "apkit_version": __version__}
    report = TrainingReport(
        val=result.best_metrics, best_epoch=result.best_epoch, select=result.select, seconds=seconds,
        settings=settings, history=result.history,
        paths={"model": str(out_dir / MODEL_FILE), "metrics": str(out_dir / METRICS_FILE),
               "training_checkpoint": str(out_dir / "training" / CHECKPOINT_NAME)},
    )
    if is_main_process():  # under torchrun, one process writes
        save_checkpoint(net, out_dir / MODEL_FILE, meta=_model_meta(data, train_set, result, settings))
        atomic_write_json(out_dir / METRICS_FILE, report.to_dict())
    return report


def _model_meta(data: str, train_set: Dataset, result: FitResult, settings: dict[str, Any]) -> dict[str, Any]:
    """What ``model.pt`` records beside the weights: the data it was trained on, its metrics and settings."""
    return {"dataset": data, "classes": list(train_set.classes), "task": train_set.task,
            "mean": list(getattr(train_set, "mean", ())), "std": list(getattr(train_set, "std", ())),
            "image_size": int(train_set.image_size), "metrics": result.best_metrics, "best_epoch": result.best_epoch,
            "settings": settings}
