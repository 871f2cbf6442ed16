"""Figures: attribution maps side by side, ROAR, deletion and insertion curves.  Matplotlib runs headless (Agg)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from apkit.core.errors import ValidationError
from apkit.core.io import atomic_write
from apkit.core.validation import check_tensor


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()), binary=True)


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize(mean, std)`` on ``(N, 3, H, W)`` images and clip to [0, 1] for display."""
    check_tensor(images, "images", ndim=4, floating=True)
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def plot_attribution_grid(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    row_titles: Sequence[str] | None = None,
    alpha: float = 0.55,
    colorbar: bool = True,
) -> Path:
    """Save a grid: one row per image, the image and then each model's (or method's) map over it.

    Parameters
    ----------
    images : Tensor (N, 3, H, W)
        Display-ready images in [0, 1] (see :func:`denormalize`).
    maps : mapping of column title -> Tensor (N, H, W)
        Attribution maps at image resolution; each map is min-max scaled for display.
    path : path-like
        Where to write the figure (PNG, PDF, SVG by suffix).
    row_titles : sequence of str, optional
        A label per row (e.g. the class explained).
    alpha : float
        Opacity of the heat map over the image.
    colorbar : bool
        Add one colour bar for every map (each map is scaled to [0, 1], its own minimum to maximum).
    """
    check_tensor(images, "images", ndim=4)
    for title, values in maps.items():
        check_tensor(values, f"maps[{title!r}]", ndim=3)
        if values.shape[0] != images.shape[0] or values.shape[1:] != images.shape[2:]:
            raise ValidationError(f"maps[{title!r}] must be {(images.shape[0], *images.shape[2:])}, "
                                  f"got {tuple(values.shape)}")
    plt = _pyplot()
    rows, cols = images.shape[0], 1 + len(maps)
    figure, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    pictures = images.detach().permute(0, 2, 3, 1).cpu().numpy()
    for r in range(rows):
        axes[r, 0].imshow(pictures[r])
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=7)
        for c, (title, values) in enumerate(maps.items(), start=1):
            heat = values[r].detach().float().cpu()
            heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
            axes[r, c].imshow(pictures[r])
            axes[r, c].imshow(heat.numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(title, fontsize=7)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if colorbar and maps:
        bar = figure.colorbar(axes[0, 1].images[-1], ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
        bar.set_label("relevance (each map min-max scaled)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    return _save(figure, path)


def plot_roar_curves(
    fractions: Sequence[float],
    scores: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    ylabel: str = "score of the retrained classifier",
) -> Path:
    """Save ROAR curves: the retrained classifier's score against the fraction of pixels removed."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 3.2))
    for name, values in scores.items():
        if len(values) != len(fractions):
            raise ValidationError(f"scores[{name!r}] must have one value per fraction ({len(fractions)}), "
                                  f"got {len(values)}")
        axis.plot(list(fractions), list(values), marker="o", linestyle="--" if name == "random" else "-",
                  label=name)
    axis.set_xlabel("fraction of pixels removed")
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return _save(figure, path)


def plot_histograms(values: Mapping[str, torch.Tensor], path: str | os.PathLike, *, xlabel: str = "value",
                    bins: int = 30) -> Path:
    """Save overlaid histograms, one per name (e.g. the per-pair cosine of each student; NaN left out)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 3.2))
    finite = {name: v.detach().double().cpu() for name, v in values.items()}
    finite = {name: v[~torch.isnan(v)].numpy() for name, v in finite.items()}
    low = min((float(v.min()) for v in finite.values() if len(v)), default=0.0)
    high = max((float(v.max()) for v in finite.values() if len(v)), default=1.0)
    for name, data in finite.items():
        axis.hist(data, bins=bins, range=(low, high if high > low else low + 1.0), alpha=0.55, label=name)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("pairs")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return _save(figure, path)


def plot_faithfulness_curves(curves: Mapping[str, Mapping[str, torch.Tensor]], path: str | os.PathLike) -> Path:
    """Save deletion and insertion curves side by side: one panel per curve kind, one line per model.

    Parameters
    ----------
    curves : mapping of panel title -> (mapping of line label -> Tensor (steps + 1,))
        E.g. ``{"deletion (gradcam)": {"teacher": curve, "pruned": curve}}``: the mean probability of
        the explained class after each step (point ``k`` at the fraction ``k / steps`` of the pixels).
    path : path-like
        Where to write the figure.
    """
    if not curves:
        raise ValidationError("curves is empty: pass at least one panel of curves")
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.0), squeeze=False)
    for axis, (title, lines) in zip(axes[0], curves.items()):
        for label, values in lines.items():
            values = check_tensor(values, f"curves[{title!r}][{label!r}]", ndim=1).detach().double().cpu()
            fractions = torch.linspace(0, 1, len(values)).numpy()
            axis.plot(fractions, values.numpy(), marker=".", linestyle="--" if label == "teacher" else "-",
                      label=label)
        axis.set_title(title, fontsize=8)
        axis.set_xlabel("fraction of pixels removed / inserted", fontsize=7)
        axis.set_ylabel("probability of the explained class", fontsize=7)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)
    return _save(figure, path)
