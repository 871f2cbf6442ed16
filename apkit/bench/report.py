"""Turn a finished benchmark run into ``results.json``, ``tables.md`` and figures."""

from __future__ import annotations

import math
from typing import Any

from apkit._io import atomic_write_json, atomic_write_text
from apkit.bench import paper
from apkit.bench.figures import plot_map_grid, plot_roar_figure
from apkit.bench.stages import BenchRun, platform_info, stage_keys
from apkit.names import ATTRIBUTION_TITLES as METHOD_TITLES
from apkit.names import COMPRESSION_TITLES
from apkit.names import REGULARIZER_TITLES as VARIANT_TITLES

__all__ = ["collect_results", "render_tables", "write_outputs"]


def collect_results(run: BenchRun, *, wall_seconds: float) -> dict[str, Any]:
    """Gather every stage's numbers into one JSON-ready dictionary."""
    settings = run.settings
    models = {key: {"compression": None, "regularizer": None, **run.stages[key]} for key in settings["teachers"]}
    for key in stage_keys(settings):
        compression, _, regularizer = key.rpartition("-")
        models[key] = {"compression": compression, "regularizer": regularizer, **run.stages[key]}
    return {
        "profile": settings["profile"],
        "settings": settings,
        "versions": platform_info(),
        "device": str(run.device),
        "seed": settings["seed"],
        "wall_seconds": round(wall_seconds, 1),
        "timings": {name: stage.get("seconds") for name, stage in run.stages.items()},
        "compute_seconds": round(sum(stage.get("seconds", 0.0) for stage in run.stages.values()), 1),
        "models": models,
        "evaluation": {key: run.stages[f"eval-{key}"] for key in models},
        "roar": run.stages.get("roar"),
    }


def write_outputs(run: BenchRun, results: dict[str, Any]) -> None:
    """Write ``results.json``, ``tables.md`` and the figures under the run's folder."""
    figures = {"maps": str(plot_map_grid(run, run.out / "figures" / "maps.png"))}
    if results["roar"]:
        figures["roar"] = str(plot_roar_figure(results["roar"], run.out / "figures" / "roar.png"))
    results["figures"] = figures
    atomic_write_json(run.out / "results.json", results)
    atomic_write_text(run.out / "tables.md", render_tables(results))


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.2f}"


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _params(model: dict[str, Any]) -> str:
    nonzero = model.get("record", {}).get("nonzero_params") or model.get("nonzero_params")
    return f"{nonzero / 1e6:.3f}M" if nonzero else "–"


def _with_paper(ours: str, published: float | None) -> str:
    return ours if published is None else f"{ours} ({published:.2f})"


def render_tables(results: dict[str, Any]) -> str:
    """Markdown tables in the paper's layouts, with the published numbers in parentheses for paper profiles."""
    settings = results["settings"]
    evaluation = results["evaluation"]
    models = results["models"]
    methods = settings["evaluation"]["attribution_methods"]
    primary = "gradcam" if "gradcam" in methods else methods[0]
    tolerances = [t for t in settings["evaluation"]["tolerances"] if t]
    predictive = "top1" if settings["protocol"] == "imagenet" else "map_image"
    lines = [
        f"# apkit bench — profile `{results['profile']}`",
        "",
        f"Device {results['device']}, compute time {results['compute_seconds']:.0f} s over all stages "
        f"(this invocation: {results['wall_seconds']:.0f} s), seed {results['seed']}. "
        f"Attribution metrics use {METHOD_TITLES.get(primary, primary)} unless a table says otherwise; AUC, "
        "Point Acc, mAP and F1 in %. Cos and ℓ2 compare each model's maps with the teacher's on the same "
        "(image, class) pairs." + (" Published numbers in parentheses." if settings.get("paper") else ""),
        "",
        "## Attribution preservation (main-paper layout)",
        "",
    ]
    tol_heads = "".join(f" Point@{t}px |" for t in tolerances)
    pred_heads = " Top-1 |" if predictive == "top1" else " mAP | per-class mAP | F1 |"
    for compression in settings["compressions"]:
        lines += [f"### {COMPRESSION_TITLES.get(compression, compression)}", "",
                  f"| Method | Params (non-zero) |{pred_heads} AUC | Point Acc |{tol_heads} Cos | ℓ2 |",
                  "|---" * (6 + len(tolerances) + (1 if predictive == "top1" else 3)) + "|"]
        rows = [("Full network", settings["compressions"][compression].get("teacher", "teacher"))]
        rows += [(VARIANT_TITLES.get(r, r), f"{compression}-{r}") for r in settings["regularizers"]]
        for title, key in rows:
            scores = evaluation[key]["methods"][primary]
            pred = evaluation[key]["predictive"]
            pred_cells = ([_pct(pred.get("top1"))] if predictive == "top1"
                          else [_pct(pred.get("map_image")), _pct(pred.get("map_class")), _pct(pred.get("f1"))])
            published = _imagenet_published(settings, compression, key)
            cells = [title, _params(models[key]), *pred_cells,
                     _with_paper(_pct(scores.get("auc")), published and published[1]),
                     _with_paper(_pct(scores.get("pointing")), published and published[2]),
                     *[_pct(scores.get(f"pointing@{t}")) for t in tolerances],
                     "–" if key in settings["teachers"] else _num(scores.get("cos")),
                     "–" if key in settings["teachers"] else _num(scores.get("l2"))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += _supplement_tables(results, methods)
    lines += _all_methods_table(results, methods)
    if results.get("roar"):
        lines += _roar_table(results["roar"])
    return "\n".join(lines) + "\n"


def _imagenet_published(settings, compression, key):
    if settings.get("paper") != "imagenet" or key in settings["teachers"]:
        return None
    return paper.IMAGENET.get(compression, {}).get(key.rpartition("-")[2])


def _supplement_tables(results: dict[str, Any], methods: list[str]) -> list[str]:
    settings = results["settings"]
    naive_rows = [("Full network", "teacher", "teacher")]
    naive_rows += [(COMPRESSION_TITLES.get(c, c), f"{c}-none", c) for c in settings["compressions"]
                   if "none" in settings["regularizers"]]
    lines = []
    tables = (("auc", "ROC-AUC", paper.VOC_AUC), ("pointing", "Point accuracy", paper.VOC_POINTING))
    for metric, title, published in tables:
        lines += [f"## {title} of every attribution method, naive compression (supplement Tables 1–2 layout)", "",
                  "| Model | Params | " + " | ".join(METHOD_TITLES.get(m, m) for m in methods) + " |",
                  "|---" * (2 + len(methods)) + "|"]
        for row_title, key, family in naive_rows:
            cells = []
            for method in methods:
                ours = _pct(results["evaluation"][key]["methods"][method].get(metric))
                value = None
                if settings.get("paper") == "voc" and method in paper.METHOD_ORDER and family in published:
                    value = published[family][paper.METHOD_ORDER.index(method)]
                cells.append(_with_paper(ours, value))
            lines.append(f"| {row_title} | {_params(results['models'][key])} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _all_methods_table(results: dict[str, Any], methods: list[str]) -> list[str]:
    lines = ["## Every model × every attribution method (AUC / Point Acc / Cos)", "",
             "| Model | " + " | ".join(METHOD_TITLES.get(m, m) for m in methods) + " |",
             "|---" * (1 + len(methods)) + "|"]
    for key, scores in results["evaluation"].items():
        cells = []
        for method in methods:
            s = scores["methods"][method]
            cells.append(f"{_pct(s.get('auc'))} / {_pct(s.get('pointing'))} / "
                         f"{'–' if key in results['settings']['teachers'] else _num(s.get('cos'))}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines + [""]


def _roar_table(roar: dict[str, Any]) -> list[str]:
    fractions = roar["fractions"]
    lines = ["## ROAR (supplement Figure 3 setting): retrained classifier's score after removing the top-k pixels",
             "", f"Score: {roar.get('metric', 'score')}. Lower is better for an informative attribution.", "",
             "| Maps from | " + " | ".join(f"k={f:g}" for f in fractions) + " |",
             "|---" * (1 + len(fractions)) + "|"]
    for source, scores in roar["scores"].items():
        lines.append(f"| {source} | " + " | ".join(_pct(s) for s in scores) + " |")
    return lines + [""]
