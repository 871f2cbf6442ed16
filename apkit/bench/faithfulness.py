"""Does attribution matching keep the teacher's faithfulness, not only its maps?

For every model of the grid (the teachers and every compressed model of every seed), the
``faith-<key>`` stage measures deletion, insertion and ROAD
(:func:`apkit.evaluation.audit_faithfulness.faithfulness_scores`) of the model's own maps of the
``faithfulness.method`` attribution method, on the first ``faithfulness.images`` evaluation images,
each explained for its teacher's top-1 class: every model of one teacher is measured on the same
(image, class) pairs.  Deletion is better when lower; insertion and ROAD (LeRF minus MoRF
probability) when higher.

The table gives, per compression, the mean over the training seeds with the half-width of its
95 % Student's t interval, and each regularizer's difference from Naive: for every seed the mean
over the images of the per-image difference of the two models trained with that seed, then the t
interval of those per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Subset

from apkit.bench.stages import BenchRun, cell_keys, model_key, regularizers_of, training_seeds
from apkit.core.names import ATTRIBUTION_TITLES, COMPRESSION_TITLES, NAIVE, REGULARIZER_TITLES
from apkit.evaluation.audit import task_of
from apkit.evaluation.audit_faithfulness import FaithfulnessSettings, faithfulness_scores
from apkit.evaluation.maps import MapCache
from apkit.evaluation.tables import Table, to_markdown
from apkit.metrics.statistics import t_interval

__all__ = ["FAITHFULNESS_COLUMNS", "faithfulness_settings", "faithfulness_stage", "faithfulness_section",
           "faithfulness_summary"]

#: The metrics of the table, and whether a higher value is more faithful.
FAITHFULNESS_COLUMNS = {"deletion": False, "insertion": True, "road": True}
CONFIDENCE = 0.95
_TITLES = {"deletion": "Deletion ↓", "insertion": "Insertion ↑", "road": "ROAD ↑"}


def faithfulness_settings(settings: Mapping[str, Any]) -> FaithfulnessSettings:
    """The :class:`FaithfulnessSettings` of a profile's ``faithfulness`` section, checked."""
    spec = settings["faithfulness"]
    return FaithfulnessSettings(metrics=tuple(spec["metrics"]), steps=spec["steps"],
                                road_percentages=tuple(spec["road_percentages"]), seed=settings["seed"]).checked()


def _images(run: BenchRun):
    """The evaluation images measured: the first ``faithfulness.images`` of the seg split (all for null)."""
    seg, count = run.datasets["seg"], run.settings["faithfulness"]["images"]
    return seg if count is None or count >= len(seg) else Subset(seg, range(count))


def faithfulness_stage(run: BenchRun, key: str) -> None:
    """Measure one model's faithfulness (the ``faith-<key>`` stage)."""
    spec = run.settings["faithfulness"]
    teacher_key = run.teacher_of(key)

    def compute() -> dict[str, Any]:
        model = run.load_model(key)
        # A teacher's own cache holds the maps and logits its evaluation stage computed already.
        reference = run.map_cache(teacher_key)
        cache = reference if key == teacher_key else MapCache(model)
        images = _images(run)
        result = faithfulness_scores(model, images, method=spec["method"], cache=cache, reference=reference,
                                     settings=faithfulness_settings(run.settings), task=task_of(run.datasets["seg"]),
                                     batch_size=run.settings["evaluation"]["batch_size"], device=run.device)
        return {"method": spec["method"], "images": len(images), "classes": result.classes.tolist(),
                "means": result.summary(),
                "values": {name: values.tolist() for name, values in result.values.items()},
                "curves": {kind: curve.tolist() for kind, curve in result.curves.items()}}

    def summary(result: dict[str, Any]) -> str:
        return "; ".join(f"{name} {value:.3f}" for name, value in result["means"].items())

    run.stage(f"faith-{key}", compute, summary)


def _interval(values: list[float]) -> dict[str, Any]:
    mean, half = t_interval(values, confidence=CONFIDENCE)
    return {"mean": float(mean), "half_width": float(half), "values": values}


def _paired_mean(ours: list, theirs: list) -> float:
    """The mean over the images of ours minus theirs, on the images where both are defined."""
    a = torch.tensor([math.nan if v is None else v for v in ours], dtype=torch.float64)
    b = torch.tensor([math.nan if v is None else v for v in theirs], dtype=torch.float64)
    both = ~(a.isnan() | b.isnan())
    return float((a[both] - b[both]).mean()) if both.any() else math.nan


def faithfulness_summary(settings: Mapping[str, Any], faith: Mapping[str, dict]) -> dict[str, Any]:
    """Every teacher's values, and every cell's mean and interval over its seeds and difference from Naive.

    ``faith`` maps model keys to their ``faith-<key>`` stage results.  Returns
    ``{"teachers": {key: {metric: value}}, "cells": {"<compression>-<regularizer>": {"metrics":
    {metric: interval}, "against_naive": {metric: interval}}}}``; an interval is ``{mean,
    half_width, values}``.
    """
    metrics = [m for m in FAITHFULNESS_COLUMNS if m in settings["faithfulness"]["metrics"]]
    cells: dict[str, Any] = {}
    for compression, regularizer in cell_keys(settings):
        seeds = training_seeds(settings, compression)
        keys = [model_key(compression, regularizer, s) for s in seeds]
        cell: dict[str, Any] = {"compression": compression, "regularizer": regularizer, "seeds": seeds,
                                "metrics": {m: _interval([faith[k]["means"][m] for k in keys]) for m in metrics}}
        if regularizer != NAIVE and NAIVE in regularizers_of(settings, compression):
            naive = [model_key(compression, NAIVE, s) for s in seeds]
            cell["against_naive"] = {
                m: _interval([_paired_mean(faith[k]["values"][m], faith[n]["values"][m]) for k, n in zip(keys, naive)])
                for m in metrics}
        cells[f"{compression}-{regularizer}"] = cell
    teachers = {key: {m: faith[key]["means"][m] for m in metrics} for key in settings["teachers"]}
    return {"method": settings["faithfulness"]["method"], "metrics": metrics, "teachers": teachers, "cells": cells}


def _show(interval: Mapping[str, float] | None, *, signed: bool = False) -> str:
    if interval is None or math.isnan(interval["mean"]):
        return "–"
    mean = f"{interval['mean']:+.3f}" if signed else f"{interval['mean']:.3f}"
    return mean if math.isnan(interval["half_width"]) else f"{mean} ± {interval['half_width']:.3f}"


def faithfulness_section(results: Mapping[str, Any]) -> list[str]:
    """The Markdown lines of the faithfulness tables: one per compression, the teacher, Naive and each
    regularizer, with each regularizer's difference from Naive (none when the run has no such stage)."""
    summary, settings = results.get("faithfulness"), results["settings"]
    if not summary:
        return []
    metrics = summary["metrics"]
    columns = ["Model", *(_TITLES[m] for m in metrics), *(f"Δ {_TITLES[m]} vs Naive" for m in metrics)]
    lines = ["## Faithfulness: does attribution matching keep the teacher's faithfulness?", "",
             _heading(summary, settings), ""]
    for compression in settings["compressions"]:
        teacher = settings["compressions"][compression].get("teacher", "teacher")
        rows = [["Full network", *(f"{summary['teachers'][teacher][m]:.3f}" for m in metrics), *("–" for _ in metrics)]]
        for regularizer in regularizers_of(settings, compression):
            cell = summary["cells"][f"{compression}-{regularizer}"]
            against = cell.get("against_naive", {})
            rows.append([REGULARIZER_TITLES.get(regularizer, regularizer),
                         *(_show(cell["metrics"][m]) for m in metrics),
                         *(_show(against.get(m), signed=True) for m in metrics)])
        seeds = ", ".join(map(str, training_seeds(settings, compression)))
        table = Table(COMPRESSION_TITLES.get(compression, compression), columns, rows,
                      note=f"Mean ± half-width of the 95 % Student's t interval over training seeds {seeds}.")
        lines += [to_markdown(table, level=3), ""]
    return lines


def _heading(summary: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The sentence that says what the faithfulness tables measure."""
    spec = settings["faithfulness"]
    method = ATTRIBUTION_TITLES.get(summary["method"], summary["method"])
    images = "every evaluation image" if spec["images"] is None else f"the first {spec['images']} evaluation images"
    percentages = ", ".join(f"{p:.0%}" for p in spec["road_percentages"])
    return (f"Deletion, insertion and ROAD of each model's own {method} maps on {images}, each explained for its "
            f"teacher's top-1 class (the same (image, class) pairs for every model of a teacher). Deletion: the area "
            f"under the probability curve as pixels are removed, most relevant first, in {spec['steps']} steps "
            f"(lower is more faithful); insertion: the same as pixels are added to a blurred image (higher is "
            f"better); ROAD: the mean LeRF minus MoRF probability with {percentages} of the pixels removed by noisy "
            f"linear imputation (higher is better). Δ vs Naive: for each seed, the mean over the images of the "
            f"regularized minus the naive model's value; ± is the half-width of the t interval over the seeds.")
