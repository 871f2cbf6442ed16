"""ROAR, RemOve And Retrain (Hooker et al., 2019; the paper's supplement E).

Do a model's attribution maps point at what matters for the task?  For every image of a training
and a test set, rank the pixels by the model's map, replace the top fraction ``k`` of them with
an uninformative value (the dataset's per-channel mean), train a fresh classifier on the
perturbed training set and score it on the perturbed test set.  The faster the score drops as
``k`` grows, the more informative the maps; random maps are the baseline.

* :func:`roar` runs the whole grid (sources x fractions) and returns a :class:`RoarResult`
  (a table and the curves), :func:`plot_roar` draws the curves.
* Maps are computed once per (model, method, dataset) and cached on disk, atomically, under a
  key of the model's weights, the method, its target policy and the dataset; each retrained
  classifier's scores are cached too, so an interrupted run resumes where it stopped.
* :class:`RemovedPixels` is the perturbed dataset, usable on its own.

Replacement value: the per-channel mean in pixel space, ``dataset.mean`` by default, i.e. 0 in the
normalised images of a dataset normalised by its own mean.  Ties in a map (e.g. the zeros of a
ReLU'd map) are broken at random, with a fixed seed per image, so that no image region is
preferred; random maps are drawn the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from apkit import attribution, models
from apkit.attribution.targets import target_pairs
from apkit.core.distributed import is_main_process
from apkit.core.errors import DataError, ValidationError
from apkit.core.io import atomic_write_json
from apkit.core.modules import evaluating
from apkit.core.validation import (
    check_choice,
    check_dataset,
    check_fraction,
    check_int,
    check_known,
    check_module,
    resolve_device,
)
from apkit.evaluation.faithfulness import rank_of_order
from apkit.training import METRIC_NAMES, Recipe, evaluate, fit, resolve_task, seed_everything
from apkit.viz import plot_roar_curves

__all__ = ["DEFAULT_FRACTIONS", "DEFAULT_RECIPE", "RANDOM", "RemovedPixels", "RoarCache", "RoarResult", "RoarSettings",
           "plot_roar", "removal_rank", "roar", "roar_maps", "roar_recipe"]

DEFAULT_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
RANDOM = "random"
#: Training of each retrained classifier, unless a run gives its own.
DEFAULT_RECIPE = Recipe(epochs=10, lr=0.01, batch_size=64)
#: Which class a source model explains per image: its top-1, or its highest-scored labelled class.
TARGET_POLICIES = ("own", "top_label")
_FORWARDED = ("classes", "num_classes", "task", "mean", "std", "image_size")


# ----------------------------------------------------------------------------------------- identities


def _digest(*parts: Any) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            hasher.update(str((part.dtype, tuple(part.shape))).encode())
            hasher.update(part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            hasher.update(json.dumps(part, sort_keys=True, default=str).encode())
    return hasher.hexdigest()[:20]


def model_identity(model: nn.Module) -> str:
    """A digest of the model's class and state (weights and buffers): equal weights, equal key."""
    state = model.state_dict()
    parts: list[Any] = [type(model).__name__, getattr(model, "apkit_config", None), sorted(state)]
    parts += [state[name] for name in sorted(state)]
    return _digest(*parts)


def dataset_identity(dataset) -> str:
    """A digest of what a dataset is: its class, ``repr``, length and the first and last items."""
    if isinstance(dataset, torch.utils.data.Subset):
        return _digest("subset", dataset_identity(dataset.dataset), list(dataset.indices))
    # A default repr holds a memory address, which changes from run to run: leave it out.
    own_repr = type(dataset).__repr__ is not object.__repr__
    parts: list[Any] = [type(dataset).__name__, repr(dataset) if own_repr else "", len(dataset)]
    for index in sorted({0, len(dataset) - 1}):
        parts += [x for x in dataset[index] if isinstance(x, torch.Tensor)]
    return _digest(*parts)


# ----------------------------------------------------------------------------------------- cache


class RoarCache:
    """ROAR's files on disk: every source's maps and every retrained classifier's scores.

    Maps live in ``folder/roar-maps-<key>.pt`` and scores in ``folder/roar-score-<key>.json``,
    each written atomically by rank 0, under a key that digests everything they depend on; a
    cache without a folder keeps nothing, so every call computes.
    """

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = None if folder is None else Path(folder)

    def maps(self, key: str, count: int) -> torch.Tensor | None:
        """The cached maps of ``key`` if there are ``count`` of them."""
        path = self._path("maps", key)
        if path is None or not path.is_file():
            return None
        cached = models.safe_load(path)
        if isinstance(cached, dict) and isinstance(cached.get("maps"), torch.Tensor) and len(cached["maps"]) == count:
            return cached["maps"]
        return None

    def save_maps(self, key: str, maps: torch.Tensor, **about: Any) -> None:
        path = self._path("maps", key)
        if path is not None and is_main_process():  # under torchrun every process has the maps; one writes
            models.atomic_save({"maps": maps, **about}, path)

    def scores(self, key: str) -> dict[str, float] | None:
        path = self._path("score", key)
        return json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else None

    def save_scores(self, key: str, scores: dict[str, float]) -> None:
        path = self._path("score", key)
        if path is not None and is_main_process():
            atomic_write_json(path, scores)

    def _path(self, kind: str, key: str) -> Path | None:
        suffix = "pt" if kind == "maps" else "json"
        return None if self.folder is None else self.folder / f"roar-{kind}-{key}.{suffix}"


# ----------------------------------------------------------------------------------------- maps


@torch.no_grad()
def _compute_maps(model: nn.Module, dataset, *, method: str, layer: str | None, target_policy: str,
                  batch_size: int, device: torch.device, progress: bool, explain_options: Mapping) -> torch.Tensor:
    maps = None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    position = 0
    with evaluating(model, device=device):
        for batch in tqdm(loader, desc=f"ROAR maps ({method})", leave=False, disable=not progress):
            images, labels = batch[0].to(device), batch[1].to(device)
            pairs = target_pairs(target_policy, labels=labels, logits=model(images))
            heat = attribution.explain(model, images, pairs, method=method, layer=layer, **explain_options)
            if heat.shape[-2:] != images.shape[-2:]:
                raise ValidationError(f"maps of size {tuple(heat.shape[-2:])} do not match the images' "
                                      f"{tuple(images.shape[-2:])}")
            if maps is None:
                maps = torch.empty(len(dataset), *heat.shape[-2:], dtype=torch.float32)
            maps[position:position + len(heat)] = heat.float().cpu()
            position += len(heat)
    # A non-finite value ranks lowest: such pixels are removed last.
    return torch.nan_to_num(maps, nan=-math.inf).clamp_(min=torch.finfo(torch.float32).min)


def roar_maps(model: nn.Module, dataset, *, method: str = "gradcam", layer: str | None = None,
              target_policy: str = "own", cache_dir: str | os.PathLike | None = None, batch_size: int = 64,
              device: str | torch.device | None = None, progress: bool = True,
              explain_options: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, bool]:
    """The model's map of every image of ``dataset``, ``(N, H, W)`` float32 on the CPU.

    ``target_policy="own"``: the model's top-1 class; ``"top_label"``: the labelled class the
    model scores highest.  With ``cache_dir`` the maps are read from / written to (atomically)
    ``cache_dir/roar-maps-<key>.pt``, the key a digest of the weights, method, layer, target
    policy and dataset.  Returns ``(maps, computed)``: ``computed`` is False when they came from
    the cache.
    """
    check_module(model, f"a ROAR source (or {RANDOM!r})")
    attribution.ATTRIBUTION_METHODS.get(method)
    check_choice(target_policy, "ROAR target policy", TARGET_POLICIES)
    options = dict(explain_options or {})
    cache = RoarCache(cache_dir)
    key = _digest(model_identity(model), method, layer, target_policy, options, dataset_identity(dataset))
    cached = cache.maps(key, len(dataset))
    if cached is not None:
        return cached, False
    maps = _compute_maps(model, dataset, method=method, layer=layer, target_policy=target_policy,
                         batch_size=batch_size, device=resolve_device(device), progress=progress,
                         explain_options=options)
    cache.save_maps(key, maps, method=method, layer=layer, target_policy=target_policy)
    return maps, True


# ----------------------------------------------------------------------------------------- perturbation


def removal_rank(maps: torch.Tensor | None, count: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """Rank of every pixel of every image in removal order (0 = removed first), ``(N, H*W)``.

    Pixels are ordered by decreasing map value, ties in a random order drawn from ``(seed, index)``;
    without maps, the order is random.
    """
    pixels = size[0] * size[1]
    dtype = torch.int16 if pixels <= torch.iinfo(torch.int16).max else torch.int32
    rank = torch.empty(count, pixels, dtype=dtype)
    for start in range(0, count, 256):  # chunks bound the memory
        stop = min(count, start + 256)
        order = torch.argsort(_pixel_noise(seed, start, stop, pixels), dim=1)  # a random order first ...
        if maps is not None:  # ... then a stable sort by decreasing value keeps it among ties
            values = maps[start:stop].reshape(stop - start, pixels).gather(1, order)
            order = order.gather(1, torch.sort(values, dim=1, descending=True, stable=True).indices)
        rank[start:stop] = rank_of_order(order).to(dtype)
    return rank


def _pixel_noise(seed: int, start: int, stop: int, pixels: int) -> torch.Tensor:
    """Pseudo-random int64 keys for the pixels of images ``start..stop-1``: a function of
    ``(seed, image index, pixel)`` only, so every image gets the same order in every run."""
    mask = 0xFFFFFFFF
    key = torch.arange(start * pixels, stop * pixels, dtype=torch.int64).view(stop - start, pixels)
    key = (key + (seed % 2**31) * 0x9E3779B1) & mask
    # A 32-bit integer hash (xor-shift, multiply): products stay below 2**63, so nothing overflows.
    for _ in range(2):
        key ^= key >> 16
        key = (key * 0x45D9F3B) & mask
    return key ^ (key >> 16)


def _normalised_fill(dataset, fill: Sequence[float] | None, *, channels: int) -> torch.Tensor:
    """The replacement colour (``fill``, default the dataset's mean) in the dataset's normalised space, ``(C, 1)``."""
    mean = getattr(dataset, "mean", None)
    std = getattr(dataset, "std", None)
    if fill is None and mean is None:
        raise ValidationError("dataset has no `mean` attribute; pass fill=(r, g, b), the replacement colour")
    fill_rgb = torch.as_tensor(mean if fill is None else fill, dtype=torch.float32).reshape(-1)
    norm_mean = torch.as_tensor(mean if mean is not None else [0.0] * channels, dtype=torch.float32)
    norm_std = torch.as_tensor(std if std is not None else [1.0] * channels, dtype=torch.float32)
    if fill_rgb.numel() != channels or norm_mean.numel() != channels or norm_std.numel() != channels:
        raise ValidationError(f"fill, mean and std must have one value per channel ({channels})")
    return ((fill_rgb - norm_mean) / norm_std).view(-1, 1)


class RemovedPixels(Dataset):
    """A dataset whose images lose their ``fraction`` of highest-ranked pixels.

    Parameters
    ----------
    dataset : Dataset
        Items ``(image, label, ...)`` with normalised images ``(3, H, W)``.
    maps : Tensor (N, H, W), optional
        One map per image; ``None`` ranks the pixels at random (the ROAR baseline).
    fraction : float
        Share of pixels to replace, in [0, 1].
    fill : sequence of 3 floats, optional
        Replacement colour in pixel space; default ``dataset.mean``.  It is normalised with
        ``dataset.mean`` / ``dataset.std`` (so the default is 0 in the images).
    seed : int
        Seed of the tie-breaking and random orders.
    rank : Tensor, optional
        A precomputed removal order (from another fraction of the same maps), to share it.

    The attributes ``classes``, ``num_classes``, ``task``, ``mean``, ``std``, ``image_size`` of
    ``dataset`` are forwarded.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> base = TensorDataset(torch.ones(1, 3, 2, 2), torch.ones(1, 1))
    >>> base.mean, base.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    >>> maps = torch.tensor([[[0.0, 3.0], [2.0, 1.0]]])
    >>> RemovedPixels(base, maps, 0.5)[0][0][0]  # the two highest pixels become the mean, 0
    tensor([[1., 0.],
            [0., 1.]])
    """

    def __init__(self, dataset, maps: torch.Tensor | None, fraction: float, *, fill: Sequence[float] | None = None,
                 seed: int = 0, rank: torch.Tensor | None = None):
        self.dataset = check_dataset(dataset)
        self.fraction = check_fraction(fraction, "fraction", allow_one=True)
        first = dataset[0][0]
        if not isinstance(first, torch.Tensor) or first.dim() != 3:
            raise DataError("dataset images must be (C, H, W) tensors")
        self._size = tuple(first.shape[-2:])
        pixels = self._size[0] * self._size[1]
        expected = (len(dataset), *self._size)
        if maps is not None and (not isinstance(maps, torch.Tensor) or tuple(maps.shape) != expected):
            raise ValidationError(f"maps must be a tensor of shape {expected} (one map per "
                                  f"image at the image size), got "
                                  f"{tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps)}")
        self.fill = _normalised_fill(dataset, fill, channels=first.shape[0])
        self.seed = check_int(seed, "seed", minimum=0)
        self.rank = removal_rank(maps, len(dataset), self._size, self.seed) if rank is None else rank
        self.removed = int(round(self.fraction * pixels))
        for name in _FORWARDED:
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        image = item[0].clone()
        removed = self.rank[index].long() < self.removed
        flat = image.view(image.shape[0], -1)
        flat[:, removed] = self.fill.to(flat.dtype)
        return (image, *item[1:])


# ----------------------------------------------------------------------------------------- ROAR


@dataclass
class RoarResult:
    """Scores of the retrained classifiers, per source of maps and fraction removed.

    Attributes
    ----------
    fractions : list of float
    scores : dict of str to list of float
        ``{source: [score at each fraction]}`` for the chosen ``metric``.
    metric : str
        ``"f1"`` (multi-label, as the paper's Figure 3) or ``"top1"`` by default.
    details : dict of str to list of dict
        Every metric of :func:`apkit.training.evaluate` per source and fraction.
    unperturbed : dict, optional
        The classifier's metrics without any removal (with ``include_unperturbed``).
    settings : dict
        The run's options; ``maps_computed`` lists the ``(source, split)`` maps this run computed
        (empty when every map came from the cache).
    """

    fractions: list[float]
    scores: dict[str, list[float]]
    metric: str
    details: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    unperturbed: dict[str, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data."""
        return {"fractions": self.fractions, "scores": self.scores, "metric": self.metric, "details": self.details,
                "unperturbed": self.unperturbed, "settings": self.settings}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoarResult:
        """The result that :meth:`to_dict` wrote (e.g. read back from ``results.json``)."""
        return cls(fractions=list(data["fractions"]), scores=dict(data["scores"]), metric=data["metric"],
                   details=dict(data.get("details") or {}), unperturbed=data.get("unperturbed"),
                   settings=dict(data.get("settings") or {}))

    def table(self) -> str:
        """A markdown table: one row per source, one column per fraction."""
        head = "| maps from | " + " | ".join(f"k={f:g}" for f in self.fractions) + " |"
        lines = [f"ROAR: {self.metric} of the retrained classifier (lower = more informative maps)", "",
                 head, "|---" * (1 + len(self.fractions)) + "|"]
        for source, values in self.scores.items():
            lines.append(f"| {source} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
        if self.unperturbed is not None:
            lines += ["", f"Without removal: {self.metric} = {self.unperturbed.get(self.metric, math.nan):.4f}"]
        return "\n".join(lines) + "\n"


def _subset(dataset, size: int | None):
    if size is None or size >= len(dataset):
        return dataset
    subset = torch.utils.data.Subset(dataset, range(size))
    for name in _FORWARDED:
        if hasattr(dataset, name):
            setattr(subset, name, getattr(dataset, name))
    return subset


@dataclass(frozen=True)
class RoarSettings:
    """What a ROAR run measures: the maps, the fractions removed, the retrained classifier and its score.

    Attributes
    ----------
    fractions : sequence of float
        Shares of pixels removed, each in [0, 1].
    method, layer : str
        Attribution method and layer of the maps (:func:`apkit.explain`).
    target_policy : {"own", "top_label"}
        Class explained per image: the source model's top-1, or its highest-scored labelled class.
    explain_options : mapping
        Extra keyword arguments of :func:`apkit.explain`.
    classifier, classifier_options : str, mapping
        The retrained model, built by :func:`apkit.models.create` (the paper: VGG-11).
    metric : str, optional
        Score reported; default ``"f1"`` (multi-label, as the paper's Figure 3) or ``"top1"``.
    train_size, test_size : int, optional
        Use only the first images of each set.
    fill : sequence of 3 floats, optional
        Replacement colour in pixel space; default the dataset's mean.
    include_unperturbed : bool
        Also train once on the intact data (no removal; the same for every source).
    """

    fractions: Sequence[float] = DEFAULT_FRACTIONS
    method: str = "gradcam"
    layer: str | None = None
    target_policy: str = "own"
    explain_options: Mapping[str, Any] = field(default_factory=dict)
    classifier: str = "vgg11_bn"
    classifier_options: Mapping[str, Any] = field(default_factory=dict)
    metric: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    fill: Sequence[float] | None = None
    include_unperturbed: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.fractions, (str, bytes)) or not isinstance(self.fractions, Sequence):
            raise ValidationError(f"fractions must be a sequence of fractions, e.g. (0.1, 0.5, 0.9), "
                                  f"got {self.fractions!r}")
        fractions = tuple(check_fraction(f, "fraction", allow_one=True) for f in self.fractions)
        if not fractions:
            raise ValidationError("fractions must hold at least one fraction, e.g. (0.1, 0.5, 0.9)")
        object.__setattr__(self, "fractions", fractions)
        attribution.ATTRIBUTION_METHODS.get(self.method)
        models.MODELS.get(self.classifier)
        check_choice(self.target_policy, "ROAR target policy", TARGET_POLICIES)
        for name in ("explain_options", "classifier_options"):
            object.__setattr__(self, name, dict(getattr(self, name) or {}))
        for name in ("train_size", "test_size"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)

    @classmethod
    def from_keywords(cls, options: Mapping[str, Any]) -> RoarSettings:
        """The settings of ``roar(..., **options)``; an unknown keyword is refused with the known ones."""
        check_known(options, "ROAR setting", [f.name for f in dataclasses.fields(cls)])
        return cls(**options)

    def metric_for(self, task: str) -> str:
        """The score reported for data of ``task``: ``metric``, checked, or the task's default."""
        metric = ("f1" if task == "multilabel" else "top1") if self.metric is None else self.metric
        return check_choice(metric, "metric", METRIC_NAMES[task])


@dataclass
class _Retraining:
    """Trains and scores one fresh classifier per (source, fraction), through the cache."""

    settings: RoarSettings
    recipe: Recipe
    num_classes: int
    task: str
    seed: int
    device: torch.device
    num_workers: int
    progress: bool
    cache: RoarCache

    def score(self, key: str, train_data, test_data) -> dict[str, float]:
        scores = self.cache.scores(key)
        if scores is not None:
            return scores
        seed_everything(self.seed)  # every retrained classifier starts from the same seeded weights
        net = models.create(self.settings.classifier, num_classes=self.num_classes,
                            **self.settings.classifier_options)
        fit(net, train_data, self.recipe, task=self.task, device=self.device, seed=self.seed,
            progress=self.progress, num_workers=self.num_workers,
            channels_last=self.device.type == "cpu")  # faster CPU convolutions
        scores = evaluate(net, test_data, task=self.task, device=self.device,
                          batch_size=max(self.recipe.batch_size, 64))
        self.cache.save_scores(key, scores)
        return scores


def _check_sources(sources) -> dict[str, nn.Module | str]:
    if not isinstance(sources, Mapping) or not sources:
        raise ValidationError("sources must be a non-empty mapping {name: model or 'random'}")
    sources = {name: RANDOM if source is None else source for name, source in sources.items()}
    for name, source in sources.items():
        if not (isinstance(source, nn.Module) or source == RANDOM):
            raise ValidationError(f"source {name!r} must be a torch.nn.Module, {RANDOM!r} or None, "
                                  f"got {type(source).__name__}")
    return sources


def roar_recipe(recipe: Recipe | Mapping[str, Any] | None) -> Recipe:
    """The retrained classifiers' recipe: ``recipe``, or :data:`DEFAULT_RECIPE` updated by a dict of changes.

    Examples
    --------
    >>> roar_recipe({"epochs": 2}).epochs, roar_recipe(None).lr
    (2, 0.01)
    """
    if recipe is None:
        return DEFAULT_RECIPE
    if isinstance(recipe, Recipe):
        return recipe
    if not isinstance(recipe, Mapping):
        raise ValidationError(f"recipe must be a Recipe or a dict of training settings, got {type(recipe).__name__}")
    return DEFAULT_RECIPE.replace(**recipe)


def roar(
    sources: Mapping[str, nn.Module | str | None],
    train_set,
    test_set,
    recipe: Recipe | Mapping[str, Any] | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
    **settings: Any,
) -> RoarResult:
    """Remove-and-retrain for each source of maps (models, and random maps) and each fraction.

    Parameters
    ----------
    sources : mapping of str to model, "random" or None
        ``{name: model}``: the model whose maps rank the pixels; ``"random"`` (or ``None``):
        random maps, the baseline.
    train_set, test_set : Dataset
        Items ``(image, label, ...)`` with attributes ``num_classes``, ``task``, ``mean``, ``std``.
    recipe : Recipe or dict, optional
        Training of each retrained classifier (:class:`apkit.training.Recipe`); a dict changes
        :data:`DEFAULT_RECIPE` (10 epochs, lr 0.01, batch 64).
    cache_dir : path, optional
        Where maps and finished classifiers' scores are cached (resume after an interruption).
    device : str or torch.device, optional
        ``"cpu"``, ``"cuda"``; ``None`` picks CUDA when available.
    seed : int
        Seeds the training, the random maps and the tie-breaking.
    num_workers : int
        DataLoader workers of the training.
    progress : bool
        Show progress.
    **settings
        What is measured (:class:`RoarSettings`): ``fractions``, ``method``, ``layer``,
        ``target_policy``, ``explain_options``, ``classifier``, ``classifier_options``, ``metric``,
        ``train_size``, ``test_size``, ``fill``, ``include_unperturbed``.

    Returns
    -------
    RoarResult
        ``.table()``, ``.to_dict()`` and :func:`plot_roar` show it.
    """
    check_dataset(train_set, "train_set")
    check_dataset(test_set, "test_set")
    sources = _check_sources(sources)
    measured = RoarSettings.from_keywords(settings)
    recipe = roar_recipe(recipe)
    num_classes = getattr(train_set, "num_classes", None)
    if num_classes is None:
        raise ValidationError("train_set needs a `num_classes` attribute (apkit datasets have one)")
    task = resolve_task(None, train_set)
    metric = measured.metric_for(task)
    check_int(seed, "seed", minimum=0)
    device = resolve_device(device)
    retraining = _Retraining(measured, recipe, num_classes, task, seed, device, num_workers, progress,
                             RoarCache(cache_dir))
    splits = {"train": _subset(train_set, measured.train_size), "test": _subset(test_set, measured.test_size)}
    data_key = {"train": [dataset_identity(train_set), measured.train_size],
                "test": [dataset_identity(test_set), measured.test_size]}
    common = [measured.classifier, measured.classifier_options, recipe.to_dict(), seed, data_key, measured.fill]
    unperturbed = (retraining.score(_digest("unperturbed", *common), splits["train"], splits["test"])
                   if measured.include_unperturbed else None)
    computed: list[tuple[str, str]] = []
    details: dict[str, list[dict[str, float]]] = {}
    for name, source in sources.items():
        split_maps, fresh = _source_maps(source, splits, measured, cache_dir=cache_dir, device=device,
                                         progress=progress, batch_size=max(recipe.batch_size, 64))
        computed += [(name, split) for split in fresh]
        source_key = RANDOM if source == RANDOM else [model_identity(source), measured.method, measured.layer,
                                                      measured.target_policy, measured.explain_options]
        details[name] = _retrain_fractions(retraining, splits, split_maps=split_maps, measured=measured,
                                           key_of=lambda fraction, k=source_key: _digest(k, fraction, *common))
    run_settings = {"method": measured.method, "layer": measured.layer, "target_policy": measured.target_policy,
                    "classifier": measured.classifier, "classifier_options": measured.classifier_options,
                    **recipe.to_dict(), "train_size": len(splits["train"]), "test_size": len(splits["test"]),
                    "seed": seed, "maps_computed": computed}
    return RoarResult(fractions=list(measured.fractions),
                      scores={n: [c[metric] for c in d] for n, d in details.items()}, metric=metric,
                      details=details, unperturbed=unperturbed, settings=run_settings)


def _source_maps(source, splits, measured: RoarSettings, **options) -> tuple[dict, list[str]]:
    """The maps of ``source`` for every split (None for random maps), and the splits whose maps were computed."""
    if source == RANDOM:
        return {split: None for split in splits}, []
    maps, fresh = {}, []
    for split, data in splits.items():
        maps[split], computed = roar_maps(source, data, method=measured.method, layer=measured.layer,
                                          target_policy=measured.target_policy,
                                          explain_options=measured.explain_options, **options)
        fresh += [split] if computed else []
    return maps, fresh


def _retrain_fractions(retraining: _Retraining, splits, *, split_maps, measured: RoarSettings, key_of) -> list[dict]:
    """One source's retrained scores at every fraction; the removal order is ranked once per split."""
    ranks: dict[str, torch.Tensor] = {}
    results = []
    for fraction in measured.fractions:
        perturbed = {}
        for split, data in splits.items():
            perturbed[split] = RemovedPixels(data, split_maps[split], fraction, fill=measured.fill,
                                             seed=retraining.seed, rank=ranks.get(split))
            ranks[split] = perturbed[split].rank
            split_maps[split] = None  # the removal order is all that is needed from now on
        results.append(retraining.score(key_of(fraction), perturbed["train"], perturbed["test"]))
    return results


def plot_roar(result: RoarResult, path: str | os.PathLike) -> Path:
    """Save the ROAR curves of ``result`` (score against fraction removed) to ``path`` (png, pdf, svg)."""
    if not isinstance(result, RoarResult):
        raise ValidationError(f"result must be a RoarResult, got {type(result).__name__}")
    return plot_roar_curves(result.fractions, result.scores, path,
                            ylabel=f"{result.metric} of the retrained classifier")
