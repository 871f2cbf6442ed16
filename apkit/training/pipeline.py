"""Train a registered model on a dataset spec and write ``model.pt`` and ``metrics.json`` (``apkit train``)."""

from __future__ import annotations

import dataclasses
import inspect
import time
from pathlib import Path
from typing import Any

from apkit import __version__
from apkit._io import atomic_write_json
from apkit._validation import resolve_device
from apkit.errors import ValidationError
from apkit.training.distributed import is_main_process
from apkit.training.loop import fit, seed_everything
from apkit.training.recipes import RECIPES

__all__ = ["default_model", "default_recipe", "train_model"]


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
    select: str | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
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
        As in :func:`apkit.training.fit`.

    Returns
    -------
    dict
        The content of ``metrics.json``: ``val`` (metrics of the saved weights), ``best_epoch``,
        ``history``, ``settings``, ``seconds``, ``paths``.
    """
    from apkit.data import from_spec
    from apkit.models import MODELS, create, save_checkpoint

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

    data_options = dict(data_options or {})
    sizes = {"train": train_samples, "val": val_samples}
    if any(n is not None for n in sizes.values()) and data != "synthetic":
        raise ValidationError("train_samples and val_samples apply only to the synthetic data")
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

    out_dir = Path(out_dir)
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
    summary = {
        "val": result.best_metrics,
        "best_epoch": result.best_epoch,
        "select": result.select,
        "seconds": seconds,
        "settings": settings,
        "history": result.history,
        "paths": {"model": str(out_dir / "model.pt"), "metrics": str(out_dir / "metrics.json"),
                  "training_checkpoint": str(out_dir / "training" / "checkpoint.pt")},
    }
    meta = {"dataset": data, "classes": list(train_set.classes), "task": train_set.task,
            "mean": list(getattr(train_set, "mean", ())), "std": list(getattr(train_set, "std", ())),
            "image_size": int(train_set.image_size), "metrics": result.best_metrics, "best_epoch": result.best_epoch,
            "settings": settings}
    if is_main_process():  # under torchrun, one process writes
        save_checkpoint(net, out_dir / "model.pt", meta=meta)
        atomic_write_json(out_dir / "metrics.json", summary)
    return summary
