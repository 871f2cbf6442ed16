"""Turn a finished benchmark run into ``results.json``, ``tables.md`` and figures.

The main tables show, for every cell (a compression with a regularizer), the mean over the training
seeds and the half-width of its 95 % Student's t interval; the verdict section compares each
regularizer with Naive on the same seeds and the same (image, class) pairs (:mod:`apkit.bench.summary`).
The other tables (every attribution method, ROAR) come from the first training seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apkit.bench import paper
from apkit.bench.faithfulness import faithfulness_section, faithfulness_summary
from apkit.bench.figures import plot_map_grid, plot_roar_figure
from apkit.bench.stages import (
    TEACHER,
    BenchRun,
    first_seed_or_teacher,
    model_key,
    parse_key,
    platform_info,
    regularizers_of,
    stage_keys,
    training_seeds,
)
from apkit.bench.summary import cell_summaries, metric_label, verdicts
from apkit.core.io import atomic_write_json, atomic_write_set, atomic_write_text, read_json
from apkit.core.names import ATTRIBUTION_TITLES as METHOD_TITLES
from apkit.core.names import COMPRESSION_TITLES
from apkit.core.names import REGULARIZER_TITLES as VARIANT_TITLES
from apkit.evaluation.tables import Table, format_cell, is_missing, to_markdown

__all__ = ["collect_results", "render_tables", "write_outputs"]


def collect_results(run: BenchRun, *, wall_seconds: float) -> dict[str, Any]:
    """Gather every stage's numbers, the cells' intervals and the verdict into one JSON-ready dictionary."""
    settings = run.settings
    models = {key: {"compression": None, "regularizer": None, "seed": None, **run.stages[key]}
              for key in settings["teachers"]}
    for key in stage_keys(settings):
        compression, regularizer, seed = parse_key(key)
        models[key] = {"compression": compression, "regularizer": regularizer, "seed": seed, **run.stages[key]}
    evaluation = {key: run.stages[f"eval-{key}"] for key in models}
    pairs: dict[str, Any] = {}

    def pairs_of(key: str) -> dict[str, Any]:
        if key not in pairs:
            pairs[key] = read_json(run.out / "pairs" / f"{key}.json")
        return pairs[key]

    return {
        "profile": settings["profile"],
        "settings": settings,
        "versions": platform_info(),
        "device": str(run.device),
        "seed": settings["seed"],
        "seeds": settings["seeds"],
        "interval": "95 % Student's t interval of the mean over the training seeds (mean ± half-width)",
        "wall_seconds": round(wall_seconds, 1),
        "timings": {name: stage.get("seconds") for name, stage in run.stages.items()},
        "compute_seconds": round(sum(stage.get("seconds", 0.0) for stage in run.stages.values()), 1),
        "models": models,
        "evaluation": evaluation,
        "cells": cell_summaries(settings, models, evaluation),
        "verdict": verdicts(settings, evaluation, pairs_of),
        "roar": run.stages.get("roar"),
        "faithfulness": (faithfulness_summary(settings, {k: run.stages[f"faith-{k}"] for k in models})
                         if settings["faithfulness"].get("enabled") else None),
    }


def write_outputs(run: BenchRun, results: dict[str, Any]) -> None:
    """Write ``results.json``, ``tables.md`` and the figures under the run's folder."""
    def write(stage: Path) -> dict[str, str]:
        # The figures are drawn into the staging folder but recorded where they will be once swapped in.
        plot_map_grid(run, stage / "figures" / "maps.png")
        figures = {"maps": str(run.out / "figures" / "maps.png")}
        if results["roar"]:
            plot_roar_figure(results["roar"], stage / "figures" / "roar.png")
            figures["roar"] = str(run.out / "figures" / "roar.png")
        results["figures"] = figures
        atomic_write_json(stage / "results.json", results)
        atomic_write_text(stage / "tables.md", render_tables(results))
        return {"results": "results.json", "tables": "tables.md", "figures": "figures"}

    atomic_write_set(run.out, write, replaces=("figures",))  # results, tables and figures: together or not at all


def _pct(value: Any) -> str:
    return format_cell(value if is_missing(value) else float(value), digits=2, scale=100)


def _num(value: Any, digits: int = 3) -> str:
    return format_cell(value if is_missing(value) else float(value), digits=digits)


def _cell(interval: dict[str, Any] | None, name: str) -> str:
    """``mean ± half-width`` of a cell's metric (percent except for Cos and ℓ2); the mean alone for one seed."""
    if interval is None:
        return "–"
    percent = name not in ("cos", "l2")
    show = _pct if percent else _num
    mean, half = interval["mean"], interval["half_width"]
    if is_missing(half):
        return show(mean)
    return f"{show(mean)} ± {100 * half:.2f}" if percent else f"{show(mean)} ± {half:.3f}"


def _difference(interval: dict[str, Any], name: str) -> str:
    """A signed paired difference ``+1.70 ± 0.42`` (percentage points, or plain for Cos and ℓ2)."""
    scale, digits = (1.0, 3) if name in ("cos", "l2") else (100.0, 2)
    mean, half = interval["mean"], interval["half_width"]
    if is_missing(mean):
        return "n/a"
    shown = f"{scale * mean:+.{digits}f}"
    return shown if is_missing(half) else f"{shown} ± {scale * half:.{digits}f}"


def _seed_list(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def _seeds_text(settings: dict[str, Any]) -> str:
    """The profile's training seeds, and those of every compression that has its own."""
    own = [f"{COMPRESSION_TITLES.get(c, c)}: {_seed_list(training_seeds(settings, c))}"
           for c, spec in settings["compressions"].items() if "seeds" in spec and spec["seeds"] != settings["seeds"]]
    return _seed_list(settings["seeds"]) + (f" ({'; '.join(own)})" if own else "")


def _first_seeds_text(settings: dict[str, Any]) -> str:
    return _seed_list(sorted({training_seeds(settings, c)[0] for c in settings["compressions"]}))


def _params(model: dict[str, Any]) -> str:
    nonzero = model.get("nonzero_params")
    return f"{nonzero / 1e6:.3f}M" if nonzero else "–"


def _with_paper(ours: str, published: float | None) -> str:
    return ours if published is None else f"{ours} ({published:.2f})"


def render_tables(results: dict[str, Any]) -> str:
    """Markdown tables in the paper's layouts, with the published numbers in parentheses for paper profiles."""
    settings = results["settings"]
    methods = settings["evaluation"]["attribution_methods"]
    primary = settings["evaluation"]["primary"]
    lines = [
        f"# apkit bench — profile `{results['profile']}`",
        "",
        f"Device {results['device']}, compute time {results['compute_seconds']:.0f} s over all stages "
        f"(this invocation: {results['wall_seconds']:.0f} s); data and teacher seed {results['seed']}, "
        f"training seeds {_seeds_text(settings)}. "
        f"Attribution metrics use {METHOD_TITLES.get(primary, primary)} unless a table says otherwise; AUC, "
        "Point Acc, mAP and F1 in %. Cos and ℓ2 compare each model's maps with the teacher's on the same "
        "(image, class) pairs." + (" Published numbers in parentheses." if settings.get("paper") else ""),
        "",
    ]
    lines += _verdict_section(results)
    lines += _main_tables(results)
    lines += _quantization_table(results)
    lines += _supplement_tables(results, methods)
    lines += _all_methods_table(results, methods)
    lines += faithfulness_section(results)
    if results.get("roar"):
        lines += _roar_table(results["roar"])
    return "\n".join(lines) + "\n"


def _verdict_section(results: dict[str, Any]) -> list[str]:
    verdict = results.get("verdict") or {}
    if not verdict:
        return []
    first = next(iter(verdict.values()))
    names = list(first["differences"])
    rows = [[COMPRESSION_TITLES.get(cell["compression"], cell["compression"]),
             VARIANT_TITLES.get(cell["regularizer"], cell["regularizer"]),
             *[_difference(cell["differences"][n], n) for n in names], str(len(cell["seeds"])),
             f"{min(cell['common_pairs'], default=0)}–{max(cell['common_pairs'], default=0)}"]
            for cell in verdict.values()]
    table = Table(
        "Verdict: each regularizer against Naive",
        ["Compression", "Regularizer", *[f"Δ {metric_label(n)}" for n in names], "seeds", "pairs"], rows,
        note=f"Paired differences (regularized minus Naive) of {METHOD_TITLES.get(first['method'], first['method'])}"
             " scores, seed by seed over the compression's training seeds, each on the (image, class) pairs that "
             "both models keep; ± is the half-width of the 95 % Student's t interval over the seeds (none for "
             "one seed).")
    return [to_markdown(table), ""] + [f"- **{COMPRESSION_TITLES.get(c['compression'], c['compression'])}:** "
                                       f"{c['sentence']}" for c in verdict.values()] + [""]


def _main_tables(results: dict[str, Any]) -> list[str]:
    settings = results["settings"]
    tolerances = [t for t in settings["evaluation"]["tolerances"] if t]
    predictive = ["top1"] if settings["protocol"] == "imagenet" else ["map_image", "map_class", "f1"]
    attribution = ["auc", "pointing", *[f"pointing@{t}" for t in tolerances], "cos", "l2"]
    lines = ["## Attribution preservation (main-paper layout)", ""]
    head = ["Method", "Params (non-zero)", *[metric_label(n) for n in predictive + attribution]]
    for compression in settings["compressions"]:
        seeds = training_seeds(settings, compression)
        note = (f"Mean ± half-width of the 95 % Student's t interval over training seeds {_seed_list(seeds)}."
                if len(seeds) > 1 else f"Training seed {seeds[0]}.")
        teacher = settings["compressions"][compression].get("teacher", "teacher")
        rows = [_teacher_row(results, teacher, predictive, attribution)]
        rows += [_cell_row(results, compression, regularizer, predictive=predictive, attribution=attribution)
                 for regularizer in regularizers_of(settings, compression)]
        table = Table(COMPRESSION_TITLES.get(compression, compression), head, rows, note=note)
        lines += [to_markdown(table, level=3), ""]
    return lines


def _quantization_table(results: dict[str, Any]) -> list[str]:
    """The int8 models' size and CPU latency against the float teacher, and how closely their twins follow them."""
    rows = []
    for key, model in results["models"].items():
        quantization = model.get("quantization")
        if not quantization:
            continue
        size, latency, twin = quantization["size"], quantization["latency"], quantization["twin"]
        rows.append([key, str(quantization["bits"]), f"{size['bytes']:,}", f"{size['teacher_bytes']:,}",
                     f"{size['ratio']:.2f}×", f"{1000 * latency['seconds']:.1f}",
                     f"{1000 * latency['teacher_seconds']:.1f}",
                     f"{latency['speedup']:.2f}×", f"{twin['top1_agreement']:.3f}",
                     f"{twin['max_abs_diff'] / max(twin['max_abs_logit'], 1e-12):.2e}"])
    if not rows:
        return []
    table = Table("Quantized models: size, CPU latency and the fake-quant twin",
                  ["Model", "weight bits", "bytes", "teacher bytes", "smaller", "ms / batch", "teacher ms / batch",
                   "faster", "twin top-1 agreement", "twin max |Δ logit| / max |logit|"], rows,
                  note="Bytes of the saved state dict (weights stored as qint8 whatever their bit-width); latency of "
                       "one batch of training images on the CPU, int8 kernels against the float teacher, measured "
                       "alternately; the twin (which the attribution maps are computed on) against the int8 model on "
                       "the same images.")
    return [to_markdown(table), ""]


def _cell_row(results: dict[str, Any], compression: str, regularizer: str, *, predictive: list[str],
              attribution: list[str]) -> list[str]:
    """One regularizer's row of a main table: its cell's intervals, with published numbers for paper profiles."""
    settings = results["settings"]
    seeds = training_seeds(settings, compression)
    cell = results["cells"][f"{compression}-{regularizer}"]["metrics"]
    published = _imagenet_published(settings, compression, regularizer)
    cells = [VARIANT_TITLES.get(regularizer, regularizer),
             _params(results["models"][model_key(compression, regularizer, seeds[0])]),
             *[_cell(cell.get(n), n) for n in predictive]]
    for name in attribution:
        shown = _cell(cell.get(name), name)
        index = {"auc": 1, "pointing": 2}.get(name)
        cells.append(_with_paper(shown, published[index]) if published and index else shown)
    return cells


def _teacher_row(results: dict[str, Any], teacher: str, predictive: list[str], attribution: list[str]) -> list[str]:
    scores = results["evaluation"][teacher]["methods"][results["settings"]["evaluation"]["primary"]]
    pred = results["evaluation"][teacher]["predictive"]
    cells = ["Full network", _params(results["models"][teacher]), *[_pct(pred.get(n)) for n in predictive]]
    return cells + ["–" if n in ("cos", "l2") else _pct(scores.get(n)) for n in attribution]


def _imagenet_published(settings, compression, regularizer):
    if settings.get("paper") != "imagenet":
        return None
    return paper.IMAGENET.get(compression, {}).get(regularizer)


def _first_seed_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(title, model key, paper family) of each compression's naive model (first seed), each after the
    full network it was compressed from (the imagenet profile prunes ResNet-34 and VGG16)."""
    settings = results["settings"]
    compressions = [c for c in settings["compressions"] if "none" in regularizers_of(settings, c)]
    teachers = list(dict.fromkeys(settings["compressions"][c].get("teacher", TEACHER) for c in compressions))
    teachers = teachers or [TEACHER]
    rows = []
    for teacher in teachers:
        name = settings["teachers"][teacher]["model"]
        rows.append(("Full network" if len(teachers) == 1 else f"Full network ({name})", teacher, "teacher"))
        rows += [(COMPRESSION_TITLES.get(c, c), model_key(c, "none", training_seeds(settings, c)[0]), c)
                 for c in compressions if settings["compressions"][c].get("teacher", TEACHER) == teacher]
    return rows


def _supplement_tables(results: dict[str, Any], methods: list[str]) -> list[str]:
    settings = results["settings"]
    lines = []
    tables = (("auc", "ROC-AUC", paper.VOC_AUC), ("pointing", "Point accuracy", paper.VOC_POINTING))
    for metric, title, published in tables:
        rows = [[row_title, _params(results["models"][key]),
                 *[_with_paper(_pct(results["evaluation"][key]["methods"][method].get(metric)),
                               _voc_published(settings, published, family, method)) for method in methods]]
                for row_title, key, family in _first_seed_rows(results)]
        table = Table(f"{title} of every attribution method, naive compression (supplement Tables 1–2 layout)",
                      ["Model", "Params", *[METHOD_TITLES.get(m, m) for m in methods]], rows,
                      note=f"Training seed {_first_seeds_text(settings)}.")
        lines += [to_markdown(table), ""]
    return lines


def _voc_published(settings: dict[str, Any], published: dict[str, Any], family: str, method: str) -> float | None:
    """The paper's number of a supplement table's cell, for the VOC paper profile."""
    if settings.get("paper") == "voc" and method in paper.METHOD_ORDER and family in published:
        return published[family][paper.METHOD_ORDER.index(method)]
    return None


def _all_methods_table(results: dict[str, Any], methods: list[str]) -> list[str]:
    settings = results["settings"]
    rows = []
    for key, scores in results["evaluation"].items():
        if not first_seed_or_teacher(settings, key):
            continue
        cells = []
        for method in methods:
            s = scores["methods"][method]
            cells.append(f"{_pct(s.get('auc'))} / {_pct(s.get('pointing'))} / "
                         f"{'–' if key in settings['teachers'] else _num(s.get('cos'))}")
        rows.append([key, *cells])
    table = Table("Every model × every attribution method (AUC / Point Acc / Cos)",
                  ["Model", *[METHOD_TITLES.get(m, m) for m in methods]], rows,
                  note=f"Training seed {_first_seeds_text(settings)} (the other seeds are evaluated with "
                       f"{METHOD_TITLES.get(settings['evaluation']['primary'])} only).")
    return [to_markdown(table), ""]


def _roar_table(roar: dict[str, Any]) -> list[str]:
    fractions = roar["fractions"]
    table = Table("ROAR (supplement Figure 3 setting): retrained classifier's score after removing the top-k pixels",
                  ["Maps from", *[f"k={f:g}" for f in fractions]],
                  [[source, *[_pct(s) for s in scores]] for source, scores in roar["scores"].items()],
                  note=f"Score: {roar.get('metric', 'score')}. Lower is better for an informative attribution. The "
                       "compressed sources are the first training seed's models.")
    return [to_markdown(table), ""]
