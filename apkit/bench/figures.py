"""The benchmark's figures: maps before and after compression (supplement Figures 1–2), ROAR curves (Figure 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from apkit.attribution import explain
from apkit.bench.stages import BenchRun, model_key, regularizers_of, training_seeds
from apkit.core.names import REGULARIZER_TITLES
from apkit.evaluation import RoarResult, plot_roar
from apkit.viz import denormalize, plot_attribution_grid

__all__ = ["plot_map_grid", "plot_roar_figure"]


def plot_map_grid(run: BenchRun, path: Path) -> Path:
    """The first evaluation images, explained by the teacher and by each compression, naive and regularized."""
    settings = run.settings
    count = min(settings["figures"]["examples"], len(run.datasets["seg"]))
    method = settings["figures"]["method"]
    items = [run.datasets["seg"][i] for i in range(count)]
    images = torch.stack([item[0] for item in items]).to(run.device)
    labels = torch.stack([item[1] for item in items])
    # The first ground-truth class of each image (the model's top class when labels are unknown).
    has_label = labels.sum(1) > 0
    classes = torch.where(has_label, labels.argmax(1), torch.zeros_like(labels.argmax(1)))
    if not bool(has_label.all()):
        with torch.no_grad():
            own = run.load_model(next(iter(settings["teachers"])))(images).argmax(1).cpu()
        classes = torch.where(has_label, classes, own)
    columns: dict[str, str] = {}
    for compression in settings["compressions"]:
        teacher = settings["compressions"][compression].get("teacher", "teacher")
        columns.setdefault(teacher, teacher)
        first_seed = training_seeds(settings, compression)[0]
        regularizers = regularizers_of(settings, compression)
        shown_variant = next((r for r in ("swa", "sswa", "ewa") if r in regularizers), None)
        for variant in ("none", shown_variant):
            if variant in regularizers:
                columns[f"{compression} {REGULARIZER_TITLES[variant]}"] = model_key(compression, variant, first_seed)
    maps = {title: explain(run.load_model(key), images, classes.to(run.device), method=method).cpu()
            for title, key in columns.items()}
    dataset = run.datasets["seg"]
    names = getattr(dataset, "classes", None)
    titles = [names[c] if names else str(int(c)) for c in classes.tolist()]
    shown = denormalize(images.cpu(), dataset.mean, dataset.std)
    return plot_attribution_grid(shown, maps, path, row_titles=titles)


def plot_roar_figure(roar: dict[str, Any], path: Path) -> Path:
    """ROAR curves of every map source (the ROAR stage's result) against the fraction of pixels removed."""
    return plot_roar(RoarResult.from_dict(roar), path)
