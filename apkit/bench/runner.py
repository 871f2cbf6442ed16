"""The benchmark grid: teacher → compressions × regularizers → every attribution method × every metric → ROAR.

Every stage writes its result atomically under the output folder and is skipped when that result is
already there, so a run that was interrupted at any point continues where it stopped when started
again (training stages also resume from their last finished epoch) and ends with the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from apkit.bench import report
from apkit.bench.faithfulness import faithfulness_stage
from apkit.bench.profiles import (
    compression_settings,
    resolve_profile,
    roar_settings,
    teacher_recipe,
    validate_profile,
)
from apkit.bench.stages import BenchRun, first_seed_or_teacher, parse_key, stage_keys
from apkit.compression import compress
from apkit.core.distributed import barrier, is_main_process
from apkit.core.errors import DataError, ValidationError
from apkit.core.io import atomic_write_json, check_writable, read_json
from apkit.core.validation import resolve_device
from apkit.data import from_spec
from apkit.evaluation import AuditSettings, audit_model, roar
from apkit.models import count_parameters, create, load_checkpoint, save_checkpoint
from apkit.training import evaluate, fit, seed_everything

__all__ = ["run_bench"]


def run_bench(
    profile: str = "default",
    *,
    out_dir: str | os.PathLike = "apkit-bench",
    data_root: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    overrides: Iterable[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) the benchmark grid of ``profile`` and write its results under ``out_dir``.

    Parameters
    ----------
    profile : str
        A name from :data:`apkit.bench.PROFILES`.
    out_dir : path-like
        Output folder; a previous run's folder is continued.
    data_root : path-like, optional
        Root of the real dataset for the ``voc`` and ``imagenet`` profiles.
    device : str or torch.device, optional
        ``None`` uses CUDA when available.
    overrides : iterable of str
        ``"a.b=value"`` settings applied over the profile (see :func:`resolve_profile`).
    progress : bool
        Show progress bars and one line per finished stage.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    settings = resolve_profile(profile, overrides)
    validate_profile(settings)  # every stage's settings, before the first one runs or settings.json is written
    _check_data_root(profile, settings, data_root)
    settings["profile"] = profile
    device = resolve_device(device)
    run = BenchRun(settings, check_writable(out_dir), device, progress)
    run.datasets = _load_datasets(settings, data_root)
    _check_same_settings(run)
    started = time.perf_counter()
    keys = stage_keys(settings)
    teachers = list(settings["teachers"])
    plan: list[tuple[str, Callable[[], None]]] = [(t, lambda t=t: _teacher_stage(run, t)) for t in teachers]
    plan += [(k, lambda k=k: _compression_stage(run, k)) for k in keys]
    plan += [(f"eval-{k}", lambda k=k: _evaluation_stage(run, k)) for k in [*teachers, *keys]]
    if settings["faithfulness"].get("enabled"):
        plan += [(f"faith-{k}", lambda k=k: faithfulness_stage(run, k)) for k in [*teachers, *keys]]
    if settings["roar"].get("enabled"):
        plan.append(("roar", lambda: _roar_stage(run)))
    with tqdm(total=len(plan), desc=f"apkit bench ({profile})", unit="stage",
              disable=not (progress and is_main_process())) as bar:
        for name, step in plan:
            bar.set_postfix_str(name)
            step()
            bar.update()
    results = report.collect_results(run, wall_seconds=time.perf_counter() - started)
    if is_main_process():
        report.write_outputs(run, results)
    barrier()
    return read_json(run.out / "results.json")


def _check_same_settings(run: BenchRun) -> None:
    """A folder holds one benchmark: continuing it with other settings would mix results."""
    path = run.out / "settings.json"
    current = json.loads(json.dumps(run.settings))
    if path.exists():
        previous = read_json(path)
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise ValidationError(
                f"{str(run.out)!r} holds a benchmark with other settings (differs in: {', '.join(changed)}); "
                "use the same settings to continue it, another out_dir (--out), or delete this folder"
            )
    elif is_main_process():
        atomic_write_json(path, current)
    barrier()  # every process has checked the folder before rank 0 fills it


# Where a real dataset's root folder is, said in the words of --data-root (bench takes no "voc:ROOT" spec).
_DATA_TITLES = {"voc": "PASCAL VOC 2012", "imagenet-seg": "ImageNet"}
_DATA_ROOTS = {"voc": "the folder holding VOCdevkit/VOC2012",
               "imagenet-seg": "the folder holding train/, val/, images/ and masks/ (`apkit list` shows the layout)"}


def _check_data_root(profile: str, settings: dict[str, Any], data_root) -> None:
    """A real dataset needs its folder; say how to pass it to the benchmark."""
    name = settings["data"]["name"]
    if name == "synthetic":
        if data_root is not None:
            raise ValidationError(f"data_root applies to the voc and imagenet profiles, not to the synthetic data of "
                                  f"profile {profile!r}; drop --data-root {str(data_root)!r}")
        return
    where = _DATA_ROOTS.get(name, "the dataset's root folder")
    if data_root is None or not str(data_root).strip():
        raise DataError(f"profile {profile!r} reads {_DATA_TITLES.get(name, name)} from a local folder: pass "
                        f"--data-root DIR (data_root=DIR in Python), DIR being {where}")
    if not Path(data_root).is_dir():
        raise DataError(f"--data-root {str(data_root)!r} is not a folder; pass {where}")


def _load_datasets(settings: dict[str, Any], data_root) -> dict[str, Any]:
    data = settings["data"]
    spec = data["name"] if data["name"] == "synthetic" else f"{data['name']}:{data_root}"
    options: dict[str, Any] = {"image_size": data["image_size"]}
    options.update({name: tuple(data[name]) for name in ("mean", "std") if data.get(name) is not None})
    if data["name"] == "synthetic":
        options["seed"] = settings["seed"]
    sizes = data.get("sizes", {})
    datasets = {}
    for split in ("train", "val", "seg"):
        extra = {"num_samples": sizes[split]} if data["name"] == "synthetic" and split in sizes else {}
        datasets[split] = from_spec(spec, split=split, **options, **extra)
    return datasets


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _describe(result: dict[str, Any]) -> str:
    params = result.get("nonzero_params")
    val = result.get("val", {})
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in val.items() if isinstance(v, float))
    return f"{params / 1e6:.3f}M non-zero params; val {shown}" if params else f"val {shown}"


def _teacher_stage(run: BenchRun, key: str) -> None:
    spec = run.settings["teachers"][key]
    train, val = run.datasets["train"], run.datasets["val"]

    def compute() -> dict[str, Any]:
        if spec.get("checkpoint"):
            model = load_checkpoint(spec["checkpoint"], map_location=run.device, expect_num_classes=train.num_classes)
            history: list = []
        else:
            seed_everything(run.settings["seed"])  # the initial weights, too, come from the run's seed
            model = create(spec["model"], num_classes=train.num_classes, **spec["options"])
            history = fit(model, train, teacher_recipe(run.settings, key), val_set=val, device=run.device,
                          seed=run.settings["seed"], checkpoint_dir=run.out / "models" / key / "training", resume=True,
                          progress=run.progress, channels_last=run.device.type == "cpu",  # faster CPU convolutions
                          ).history
        if is_main_process():
            save_checkpoint(model, run.model_path(key), meta={"stage": key, "settings": spec})
        return {"params": count_parameters(model), "nonzero_params": count_parameters(model, nonzero=True),
                "val": evaluate(model, val, device=run.device), "history": history}

    run.stage(key, compute, _describe)


def _compression_stage(run: BenchRun, key: str) -> None:
    compression, regularizer, seed = parse_key(key)
    method, values = compression_settings(run.settings, compression, regularizer)

    def compute() -> dict[str, Any]:
        _, record = compress(
            run.load_model(run.teacher_of(key)), method, regularizer, train_set=run.datasets["train"],
            val_set=run.datasets["val"], settings=values, out_dir=run.out / "models" / key,
            resume=True, device=run.device, seed=seed, progress=run.progress,
        )
        return record.to_dict()

    run.stage(key, compute, _describe)


def evaluated_methods(settings: dict[str, Any], key: str) -> list[str]:
    """The attribution methods a model is evaluated with: all of them for the teachers and the first
    training seed, the primary method (the main tables') for the other seeds."""
    evaluation = settings["evaluation"]
    if first_seed_or_teacher(settings, key):
        return list(evaluation["attribution_methods"])
    return [evaluation["primary"]]


def _evaluation_stage(run: BenchRun, key: str) -> None:
    evaluation = run.settings["evaluation"]
    teacher_key = run.teacher_of(key)

    def compute() -> dict[str, Any]:
        is_teacher = teacher_key == key
        result = audit_model(
            run.load_model(key), run.datasets["seg"], teacher=None if is_teacher else run.load_model(teacher_key),
            classification_set=run.datasets["val"], cache=run.map_cache(key) if is_teacher else None,
            teacher_cache=None if is_teacher else run.map_cache(teacher_key),
            settings=AuditSettings(attribution_methods=evaluated_methods(run.settings, key),
                                   protocol=run.settings["protocol"], tolerances=evaluation["tolerances"],
                                   batch_size=evaluation["batch_size"], device=run.device, progress=run.progress,
                                   faithfulness=()),  # measured by the faith- stages, for one method
        )
        if is_main_process():
            atomic_write_json(run.out / "pairs" / f"{key}.json", result.pair_lists())
        return {"predictive": result.predictive, "methods": result.methods}

    def summary(result: dict[str, Any]) -> str:
        return "; ".join(f"{m} AUC {_fmt(s['auc'])} point {_fmt(s['pointing'])}" for m, s in result["methods"].items())

    run.stage(f"eval-{key}", compute, summary)


def _roar_stage(run: BenchRun) -> None:
    spec = run.settings["roar"]
    measured, recipe = roar_settings(run.settings)

    def compute() -> dict[str, Any]:
        sources = {name: None if name == "random" else run.load_model(run.source_key(name))
                   for name in spec["sources"]}
        result = roar(
            sources, run.datasets["train"], run.datasets["val"], recipe, cache_dir=run.out / "roar-cache",
            device=run.device, seed=run.settings["seed"], progress=run.progress, **dataclasses.asdict(measured),
        )
        return result.to_dict()

    def summary(result: dict[str, Any]) -> str:
        return "; ".join(f"{s}: {', '.join(_fmt(v) for v in vals)}" for s, vals in result["scores"].items())

    run.stage("roar", compute, summary)
