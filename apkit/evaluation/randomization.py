"""The cascading model-parameter randomisation test (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps").

An attribution method that explains the model must give other maps once the model's learned
parameters are destroyed.  :func:`randomization_test` re-draws the parameters of one layer after
another, from the output layer down (cumulatively: a step keeps the layers randomised before it),
and after each step measures how similar the maps of the randomised model still are to the
original model's maps, as Spearman rank correlation and as cosine similarity.  A method whose
similarity stays near 1 all the way down ignores the model (an edge detector would pass that
"test" too).

Choices, and how they relate to Quantus's ``MPRT`` (the peer implementation):

* **Layers.** By default every module that has a ``reset_parameters`` method, in the reverse order
  of ``named_modules()`` (top first) -- Quantus's convention.  This includes convolutions, linear
  layers and BatchNorm layers; a BatchNorm layer's reset gives it the identity affine map
  (weight 1, bias 0) and fresh running statistics (mean 0, variance 1), as in Quantus.
* **Distribution.** Each layer is re-drawn by its own ``reset_parameters()``, i.e. PyTorch's
  default initialisation (Kaiming-uniform weights, ``a=sqrt(5)``, and uniform biases in
  ``±1/sqrt(fan_in)`` for convolutions and linear layers), with the random state seeded as
  ``torch.manual_seed(seed)`` does, before every layer (so two layers of one shape get the same
  values, as in Quantus).  This is exactly Quantus's draw with its seed set to ``seed - 1`` (Quantus
  seeds ``seed + 1``).  The draw runs inside ``torch.random.fork_rng``, so the caller's random state
  is left as it was.
* **Absolute values.** Adebayo et al. report rank correlation both of absolute and of signed
  maps; ``absolute=True`` (the default, and Quantus's ``abs=True``) compares absolute values,
  ``absolute=False`` the signed maps.  Maps are not rescaled: both similarities ignore a
  positive scale, so Quantus's normalisation by the maximum changes nothing but float32 rounding
  (which can tie near-equal values: Spearman differences up to about 1e-4).
* **Spearman.** Ranks are averaged over ties (Grad-CAM's ReLU gives many zeros), computed in
  float64 for all maps at once on the maps' device, as ``scipy.stats.spearmanr`` does per map.
  A constant map has no rank correlation: its value is NaN (as SciPy's), and the layer means
  skip NaNs.  Cosine similarity of an all-zero map is 0.

Examples
--------
>>> import torch
>>> from apkit import models
>>> from apkit.evaluation.randomization import randomization_test
>>> net = models.create("vgg_small", num_classes=4)
>>> images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
>>> result = randomization_test(net, images, target=torch.tensor([0, 1, 2]), layers=["classifier.1", "features.19"])
>>> result.layers
('classifier.1', 'features.19')
>>> tuple(result.spearman.shape), tuple(result.spearman_per_image.shape)
((2,), (2, 3))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from apkit.attribution import ATTRIBUTION_METHODS, explain
from apkit.attribution.base import check_batch_size, check_inputs
from apkit.attribution.targets import as_pairs
from apkit.core.errors import ValidationError, unknown_name
from apkit.core.modules import unwrap
from apkit.core.validation import check_int, check_module
from apkit.evaluation.faithfulness import FAITHFULNESS_METRICS
from apkit.models import default_layer

__all__ = ["RandomizationResult", "randomizable_layers", "randomization_test", "spearman_rows"]

#: An attribution given as a function: ``(model, inputs (N, C, H, W), target LongTensor (N,)) -> maps (N, H, W)``.
AttributionFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RandomizationResult:
    """Similarity of the maps of the cumulatively randomised model to the original maps.

    Attributes
    ----------
    layers : tuple of str
        The randomised layers, in the order they were randomised (top first by default); step
        ``l`` has every layer up to and including ``layers[l]`` randomised.
    spearman, cosine : Tensor (L,)
        Mean over the images of each step's Spearman rank correlation and cosine similarity
        (NaN values skipped).
    spearman_per_image, cosine_per_image : Tensor (L, N)
        The values of every image at every step.
    method : str
        The attribution method (a callable's name for a function).
    layer : str or None
        The layer a layer method (Grad-CAM, Excitation Backprop) explained; None for the others.
    absolute : bool
        Whether absolute values of the maps were compared.
    """

    layers: tuple[str, ...]
    spearman: torch.Tensor
    cosine: torch.Tensor
    spearman_per_image: torch.Tensor
    cosine_per_image: torch.Tensor
    method: str
    layer: str | None
    absolute: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data (NaN stays ``float('nan')``)."""
        return {
            "layers": list(self.layers),
            "spearman": self.spearman.tolist(),
            "cosine": self.cosine.tolist(),
            "spearman_per_image": self.spearman_per_image.tolist(),
            "cosine_per_image": self.cosine_per_image.tolist(),
            "method": self.method,
            "layer": self.layer,
            "absolute": self.absolute,
        }


def randomizable_layers(model: nn.Module) -> list[str]:
    """Dotted names of the layers the test re-draws by default, top (output side) first.

    Every module with a ``reset_parameters`` method, in the reverse order of ``named_modules()``,
    as Quantus's MPRT chooses them: convolutions, linear and BatchNorm layers.

    Examples
    --------
    >>> randomizable_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Linear(4, 2)))
    ['3', '1', '0']
    """
    names = [name for name, module in unwrap(model).named_modules()
             if name and callable(getattr(module, "reset_parameters", None))]
    return names[::-1]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..P of every row of ``values`` (B, P) in float64, ties given their average rank (SciPy's ``rankdata``).

    In sorted order a value's tied group runs from the last group start at or before it to the first
    group end at or after it; its rank is the mean of the two positions (plus 1).
    """
    ordered, order = values.sort(dim=1, stable=True)
    count = values.shape[1]
    positions = torch.arange(count, device=values.device).expand_as(order)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, positions, 0).cummax(dim=1).values
    last = torch.where(ends, positions, count).flip(1).cummin(dim=1).values.flip(1)
    average = (first + last).double() / 2 + 1
    return torch.empty_like(average).scatter_(1, order, average)


def _centred(ranks: torch.Tensor) -> torch.Tensor:
    """Rows minus their mean, scaled to unit norm (a constant row becomes NaN: it has no correlation)."""
    ranks = ranks - ranks.mean(dim=1, keepdim=True)
    return ranks / ranks.norm(dim=1, keepdim=True)


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row of ``a`` with the same row of ``b``, ``(B, ...) -> (B,)`` float64.

    Ties get their average rank, so each value equals ``scipy.stats.spearmanr(a[i], b[i])``;
    a constant row gives NaN.

    Examples
    --------
    >>> spearman_rows(torch.tensor([[1., 2., 2., 5.]]), torch.tensor([[0., 1., 3., 2.]]))
    tensor([0.6325], dtype=torch.float64)
    """
    return _spearman_to(_centred(_ranks(a.reshape(len(a), -1))), b)


def _spearman_to(reference: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of each row of ``b`` with ``reference``, the centred ranks of the other maps."""
    return (reference * _centred(_ranks(b.reshape(len(b), -1)))).sum(dim=1)


def _cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 0, (a * b).sum(dim=1) / norms.clamp(min=torch.finfo(torch.float64).tiny), 0.0)


def _check_method(method: object) -> str:
    """The method's name; an unknown registered name gets the one unknown-name error."""
    if callable(method):
        return getattr(method, "__name__", type(method).__name__)
    if not isinstance(method, str) or method not in ATTRIBUTION_METHODS:
        raise unknown_name(method, "attribution method", ATTRIBUTION_METHODS)
    return method


def _check_layers(model: nn.Module, layers: Sequence[str] | None) -> tuple[str, ...]:
    known = randomizable_layers(model)
    if layers is None:
        layers = known
    elif isinstance(layers, str) or not isinstance(layers, Sequence):
        raise ValidationError(f"layers must be a list of dotted layer names such as {known[:2]}, got {layers!r}")
    for name in layers:
        if name not in known:
            raise unknown_name(name, "randomizable layer", known)
    if len(set(layers)) != len(layers):
        raise ValidationError(f"layers must name each layer once, got {list(layers)}")
    if not layers:
        raise ValidationError("layers must name at least one layer; the model has none with parameters to re-draw")
    return tuple(layers)


def _check_target(target: object, inputs: torch.Tensor) -> torch.Tensor:
    """One class per image, ``LongTensor (N,)`` on the inputs' device."""
    pairs = as_pairs(target, len(inputs), device=inputs.device)
    if len(pairs) != len(inputs) or not torch.equal(pairs[:, 0], torch.arange(len(inputs), device=inputs.device)):
        raise ValidationError("target must give one class per image (an int or a LongTensor (N,)), "
                              f"got {len(pairs)} (image, class) pairs for {len(inputs)} images")
    return pairs[:, 1]


@dataclass(frozen=True)
class _Explainer:
    """How one step computes the maps of all images: a registered method through :func:`apkit.explain`, or a
    function applied chunk by chunk."""

    method: str | AttributionFunction
    batch_size: int | None
    options: Mapping[str, Any]
    absolute: bool

    def __call__(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if callable(self.method):
            step = self.batch_size or len(inputs)
            with torch.no_grad():
                pieces = [self.method(model, inputs[i:i + step], target[i:i + step])
                          for i in range(0, len(inputs), step)]
            maps = torch.cat(pieces)
        else:
            maps = explain(model, inputs, target, method=self.method, batch_size=self.batch_size, **self.options)
        if maps.shape != (len(inputs), *inputs.shape[2:]):
            raise ValidationError(f"the attribution must return maps (N, H, W) = {(len(inputs), *inputs.shape[2:])}, "
                                  f"got {tuple(maps.shape)}")
        maps = maps.detach()
        return maps.abs() if self.absolute else maps


def _explain_options(method: str | AttributionFunction, model: nn.Module, inputs: torch.Tensor,
                     options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` with the layer of a layer method fixed once: the probe that :func:`apkit.explain` would run on
    every call reads only the model's structure, which randomisation does not change."""
    options = dict(options or {})
    if isinstance(method, str) and getattr(ATTRIBUTION_METHODS.get(method), "is_layer_method", False):
        options.setdefault("layer", default_layer(model, "attribution", inputs[:1]))
    return options


def _redraw(module: nn.Module, seed: int) -> None:
    """Re-draw ``module``'s parameters with its default initialisation, every generator it draws from seeded with
    ``seed`` (as ``torch.manual_seed(seed)`` would), and give the caller's random state back afterwards."""
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.default_generator.manual_seed(seed)
        for index in devices:  # only the devices in use: seeding the others would change their random state
            torch.cuda.default_generators[index].manual_seed(seed)
        module.reset_parameters()


@FAITHFULNESS_METRICS.register("randomization", help="cascading model-parameter randomisation from the top layer "
                               "down: the maps' similarity to the original ones (Adebayo et al. 2018)")
def randomization_test(
    model: nn.Module,
    inputs: torch.Tensor,
    target: object,
    *,
    method: str | AttributionFunction = "gradcam",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    absolute: bool = True,
    explain_options: Mapping[str, Any] | None = None,
) -> RandomizationResult:
    """Cascading model-parameter randomisation: the similarity of the maps as layers are re-drawn from the top down.

    The model itself is never modified: the test works on a ``copy.deepcopy`` of it.  The original
    maps are computed once; then for each layer (cumulatively) one batched attribution call over
    all images gives the randomised model's maps, compared with the original ones on their device.
    See the module's description for the choice of layers, the distribution and the comparison.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier.
    inputs : Tensor (N, C, H, W)
        The images, on the model's device.
    target : int or LongTensor (N,)
        The class explained for each image.
    method : str or callable
        A name in :data:`apkit.attribution.ATTRIBUTION_METHODS` (e.g. "gradcam", "lrp"), or a function
        ``(model, inputs, target) -> (N, H, W)`` (e.g. a control that ignores the model).
    layers : list of str, optional
        Dotted names of the layers to randomise, in that order (default: :func:`randomizable_layers`,
        top first).
    seed : int
        Seed of every layer's draw (Quantus's MPRT with ``seed=seed - 1`` draws the same parameters).
    batch_size : int, optional
        At most this many images per attribution pass (default: :func:`apkit.explain`'s).
    absolute : bool
        Compare absolute values of the maps (Adebayo et al.'s "ABS" curves, Quantus's default), or the
        signed maps.
    explain_options : dict, optional
        Further keywords of :func:`apkit.explain`, e.g. ``{"layer": "features.8"}`` for Grad-CAM.

    Returns
    -------
    RandomizationResult
        Layer names, mean Spearman and cosine per layer ``(L,)`` and per image ``(L, N)``.

    Examples
    --------
    >>> import torch
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    >>> images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> before = {k: v.clone() for k, v in net.state_dict().items()}
    >>> result = randomization_test(net, images, 1, explain_options={"layer": "1"})
    >>> result.layers
    ('3', '0')
    >>> all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the model is unchanged
    True
    """
    check_module(model)
    inputs = check_inputs(inputs)
    target = _check_target(target, inputs)
    method_name = _check_method(method)
    check_int(seed, "seed")
    copied = copy.deepcopy(unwrap(model))
    options = _explain_options(method, copied, inputs, explain_options)
    explainer = _Explainer(method, check_batch_size(batch_size), options, bool(absolute))
    names = _check_layers(copied, layers)
    modules = dict(copied.named_modules())
    original = explainer(copied, inputs, target)
    original_ranks = _centred(_ranks(original.reshape(len(original), -1)))  # ranked once for all steps
    spearman, cosine = [], []
    for name in names:
        _redraw(modules[name], seed)
        maps = explainer(copied, inputs, target)
        spearman.append(_spearman_to(original_ranks, maps))
        cosine.append(_cosine_rows(original, maps))
    spearman_all, cosine_all = torch.stack(spearman), torch.stack(cosine)
    return RandomizationResult(
        layers=names, spearman=spearman_all.nanmean(dim=1), cosine=cosine_all.nanmean(dim=1),
        spearman_per_image=spearman_all, cosine_per_image=cosine_all, method=method_name, layer=options.get("layer"),
        absolute=bool(absolute),
    )
