"""What a grid's training seeds say together: every cell's mean and interval, and each regularizer's verdict.

A cell is one compression with one regularizer, trained once per seed.  Its numbers are the mean
over the seeds and the half-width of the 95 % Student's t interval of that mean
(:func:`apkit.metrics.statistics.t_interval`).  The verdict compares each regularized cell with
the Naive cell of the same compression, seed by seed (the same seed means the same student
initialisation and data order): for every seed the difference of the two models' means over the
(image, class) pairs that *both* keep (so the less accurate model is not scored on an easier
subset), then the t interval of those per-seed differences.  The per-seed differences come from
:func:`apkit.evaluation.comparison.paired_difference`, the audit's comparison of two per-pair tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from apkit.bench.stages import cell_keys, model_key, regularizers_of, training_seeds
from apkit.core.names import ATTRIBUTION_TITLES, NAIVE, REGULARIZER_TITLES
from apkit.evaluation.comparison import paired_difference, score_columns
from apkit.evaluation.pairs import PairTable
from apkit.metrics.statistics import t_interval

__all__ = ["cell_summaries", "metric_label", "sentence", "verdicts"]

CONFIDENCE = 0.95


def predictive_metric(settings: Mapping[str, Any]) -> str:
    """The predictive metric the verdict weighs against: per-class mAP, or top-1 for single-label data."""
    return "top1" if settings["protocol"] == "imagenet" else "map_class"


def _interval(values: list[float]) -> dict[str, Any]:
    mean, half = t_interval(values, confidence=CONFIDENCE)
    return {"mean": float(mean), "half_width": float(half), "values": values}


def cell_summaries(settings: Mapping[str, Any], models: Mapping[str, dict], evaluation: Mapping[str, dict]
                   ) -> dict[str, dict[str, Any]]:
    """``{"<compression>-<regularizer>": {"seeds": [...], "metrics": {name: {mean, half_width, values}}}}``.

    The metrics are the predictive ones, the primary attribution method's scores and the model's
    non-zero parameter count.
    """
    primary = settings["evaluation"]["primary"]
    summaries = {}
    for compression, regularizer in cell_keys(settings):
        seeds = training_seeds(settings, compression)
        keys = [model_key(compression, regularizer, s) for s in seeds]
        rows = [{**evaluation[k]["predictive"], **evaluation[k]["methods"][primary],
                 "nonzero_params": models[k].get("nonzero_params")} for k in keys]
        names = [n for n, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        summaries[f"{compression}-{regularizer}"] = {
            "compression": compression, "regularizer": regularizer, "seeds": seeds,
            "metrics": {n: _interval([_number(r.get(n)) for r in rows]) for n in names},
        }
    return summaries


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def verdicts(settings: Mapping[str, Any], evaluation: Mapping[str, dict],
             pairs_of: Callable[[str], Mapping[str, dict]]) -> dict[str, dict[str, Any]]:
    """Each regularized cell against Naive: paired differences with intervals, and a plain sentence.

    ``pairs_of(key)`` gives a model's per-pair tables, ``{method: PairTable or {column: list}}``.
    """
    primary = settings["evaluation"]["primary"]
    predictive = predictive_metric(settings)
    # The audit's localization scores (auc, pointing, pointing@t), and the similarity to the teacher.
    columns = {**score_columns(settings["evaluation"]["tolerances"]), "cos": "cos"}
    results = {}
    for compression, regularizer in cell_keys(settings):
        if regularizer == NAIVE or NAIVE not in regularizers_of(settings, compression):
            continue
        per_seed: dict[str, list[float]] = {name: [] for name in [*columns, predictive]}
        common: list[int] = []
        seeds = training_seeds(settings, compression)
        for seed in seeds:
            key, naive = model_key(compression, regularizer, seed), model_key(compression, NAIVE, seed)
            ours, theirs = PairTable.from_dict(pairs_of(key)[primary]), PairTable.from_dict(pairs_of(naive)[primary])
            for name, column in columns.items():
                difference, count = paired_difference(ours, theirs, column)
                per_seed[name].append(difference)
                common += [count] if name == "auc" else []
            per_seed[predictive].append(_number(evaluation[key]["predictive"].get(predictive))
                                        - _number(evaluation[naive]["predictive"].get(predictive)))
        differences = {name: _interval(values) for name, values in per_seed.items()}
        results[f"{compression}-{regularizer}"] = {
            "compression": compression, "regularizer": regularizer, "method": primary, "seeds": seeds,
            "common_pairs": common,
            "differences": differences, "sentence": sentence(regularizer, primary, differences, predictive),
        }
    return results


def _excludes_zero(difference: Mapping[str, float]) -> int:
    """+1 or -1 when the interval lies above or below zero, 0 when it holds zero (or is undefined)."""
    mean, half = difference["mean"], difference["half_width"]
    if math.isnan(mean) or math.isnan(half):
        return 0
    return 1 if mean - half > 0 else (-1 if mean + half < 0 else 0)


def metric_label(name: str) -> str:
    """How the tables name a metric: ``"pointing@3"`` -> ``"Point@3px"``."""
    labels = {"auc": "AUC", "pointing": "Point Acc", "cos": "Cos", "l2": "ℓ2", "map_class": "per-class mAP",
              "map_image": "mAP", "f1": "F1", "top1": "Top-1"}
    if name.startswith("pointing@"):
        return f"Point@{name.partition('@')[2]}px"
    return labels.get(name, name)


def _show(name: str, difference: Mapping[str, float]) -> str:
    scale, digits = (1.0, 3) if name in ("cos", "l2") else (100.0, 1)
    mean, half = scale * difference["mean"], scale * difference["half_width"]
    if math.isnan(mean):
        return f"{metric_label(name)} n/a"
    shown = f"{metric_label(name)} {mean:+.{digits}f}"
    return shown if math.isnan(half) else f"{shown} ± {half:.{digits}f}"


def sentence(regularizer: str, method: str, differences: Mapping[str, Mapping[str, float]], predictive: str) -> str:
    """One plain sentence: does the regularizer preserve the maps better than Naive, and at what accuracy?"""
    who, maps = REGULARIZER_TITLES.get(regularizer, regularizer), ATTRIBUTION_TITLES.get(method, method)
    attribution = [n for n in differences if n != predictive]
    signs = {n: _excludes_zero(differences[n]) for n in attribution}
    shown = ", ".join(_show(n, differences[n]) for n in attribution)
    key_signs = [signs["auc"], signs["cos"]]
    if all(math.isnan(differences[n]["mean"]) for n in attribution):
        claim = f"{who} cannot be compared with Naive on {maps}: no (image, class) pair is kept by both models"
    elif all(s > 0 for s in key_signs):
        claim = f"{who} preserves {maps} better than Naive ({shown})"
    elif any(s < 0 for s in key_signs):
        claim = f"{who} preserves {maps} worse than Naive ({shown})"
    else:
        unclear = " and ".join(metric_label(n) for n in ("auc", "cos") if signs[n] == 0)
        phrase = f"the intervals of {unclear} include" if " and " in unclear else f"the interval of {unclear} includes"
        claim = f"{who} does not preserve {maps} measurably better than Naive: {phrase} zero ({shown})"
    accuracy = differences[predictive]
    cost = _excludes_zero(accuracy)
    level = {0: "at equal accuracy", 1: "with higher accuracy", -1: "at lower accuracy"}[cost]
    return f"{claim}, {level} ({_show(predictive, accuracy)})."
