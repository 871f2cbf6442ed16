"""Faithfulness without retraining: deletion, insertion and ROAD, batched on the inputs' device.

Does the model really use the pixels its map ranks first?  These metrics perturb the image in the
order of the map and watch the probability of the explained class:

* :func:`deletion` / :func:`insertion` (Petsiuk et al., BMVC 2018, "RISE"): pixels are removed from
  (replaced by a baseline), or added to (taken from the image into the baseline), the image in the
  order of the map, highest first, in ``steps`` steps; the score is the area under the curve of the
  target's probability.  A faithful map gives a low deletion and a high insertion score.
  :func:`deletion_curve` / :func:`insertion_curve` return the curves themselves.
* :func:`road` (Rong et al., ICML 2022, "A Consistent and Efficient Evaluation Strategy for
  Attribution Methods"): remove a fraction of the pixels, most relevant first (MoRF) or least
  relevant first (LeRF), and fill them by **noisy linear imputation** (:func:`noisy_linear_imputation`:
  each removed pixel is the weighted mean of its eight neighbours, solved jointly for all removed
  pixels, plus Gaussian noise), so that the shape of the removed region tells the model little.
  A faithful map gives low MoRF and high LeRF probabilities.

How the pixels are ordered (all three metrics): by the map's value, highest first; ties are broken
by the pixel's row-major index (a stable sort), so a map with ties gives one fixed order.

All perturbed images of a chunk of ``batch_size`` source images (each with all its steps or
percentages) go through the model in one forward pass; nothing loops over single images or steps
in Python, except ROAD's imputation on the CPU, which factorises one sparse matrix per mask.
The model runs in eval mode under :func:`torch.no_grad` and is restored afterwards, never modified.
:data:`FAITHFULNESS_METRICS` names the metrics for ``apkit list``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from apkit.core.errors import ValidationError
from apkit.core.modules import evaluating
from apkit.core.registry import Registry
from apkit.core.validation import (
    check_choice,
    check_float,
    check_fraction,
    check_int,
    check_module,
    check_tensor,
)

__all__ = ["DEFAULT_PERCENTAGES", "DEFAULT_STEPS", "FAITHFULNESS_METRICS", "ORDERS", "TASKS", "curve_auc",
           "deletion", "deletion_curve", "insertion", "insertion_curve", "noisy_linear_imputation", "pixel_rank",
           "rank_of_order", "road", "road_images", "SOLVERS", "target_probability"]

#: How the model's outputs become probabilities: softmax over classes, or a sigmoid per class.
TASKS = ("multiclass", "multilabel")
#: ROAD's removal orders: most relevant first, least relevant first.
ORDERS = ("morf", "lerf")
#: How the imputation's systems are solved: "direct" (sparse LU in float64, on the CPU), "cg"
#: (conjugate gradients on the images' device), or "auto": direct for CPU tensors, cg otherwise.
SOLVERS = ("auto", "direct", "cg")
DEFAULT_STEPS = 20
DEFAULT_BATCH_SIZE = 8
#: ROAD's fractions of removed pixels (the paper's 10 % to 90 %).
DEFAULT_PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Standard deviation of the noise added to every imputed pixel (the ROAD authors' value).
DEFAULT_NOISE = 0.01
#: Petsiuk et al.'s blurred baseline: a Gaussian of kernel 11 and sigma 5.
BLUR_KERNEL = 11
BLUR_SIGMA = 5.0
#: Noisy linear imputation's neighbour weights (the ROAD paper): 1/6 for each of the four direct
#: neighbours, 1/12 for each of the four diagonal ones, summing to 1 (see :func:`_neighbour_sum`).
DIAGONAL_WEIGHT = 1 / 12
#: The imputation's conjugate-gradient solve (the "cg" solver) stops when every system's residual is this small
#: relative to its right-hand side (checked every few iterations), or after MAX_ITERATIONS.
SOLVER_TOLERANCE = 1e-6
MAX_ITERATIONS = 2000
_CHECK_EVERY = 5

FAITHFULNESS_METRICS: Registry = Registry("faithfulness metric")


# ----------------------------------------------------------------------------------------- checks


def _check_case(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor) -> None:
    """Refuse a model, images, maps and targets that do not fit together, saying which and how."""
    check_module(model)
    check_tensor(inputs, "inputs", ndim=4, floating=True)
    check_tensor(maps, "maps", ndim=3, floating=True)
    check_tensor(target, "target", ndim=1)
    if maps.shape != (inputs.shape[0], *inputs.shape[2:]):
        raise ValidationError(
            f"maps must be (N, H, W) = {(inputs.shape[0], *inputs.shape[2:])} to match inputs of shape "
            f"{tuple(inputs.shape)}, got {tuple(maps.shape)}; upsample the maps to the input resolution")
    if target.shape[0] != inputs.shape[0] or target.is_floating_point() or target.dtype == torch.bool:
        raise ValidationError(
            f"target must be an integer tensor of shape ({inputs.shape[0]},), one class per image, got "
            f"{target.dtype} of shape {tuple(target.shape)}")
    if maps.device != inputs.device or target.device != inputs.device:
        raise ValidationError(f"inputs, maps and target must be on one device, got {inputs.device}, "
                              f"{maps.device} and {target.device}; move them with .to({inputs.device!s})")


def _check_percentages(percentages: Sequence[float]) -> tuple[float, ...]:
    if isinstance(percentages, (str, bytes)) or not isinstance(percentages, Sequence) or not percentages:
        raise ValidationError(f"percentages must be a non-empty sequence of fractions in [0, 1], got {percentages!r}")
    return tuple(check_fraction(p, "each of percentages", allow_one=True) for p in percentages)


def _check_baseline(baseline: object, shape: torch.Size) -> None:
    channels = shape[1]
    if baseline == "blur":
        if min(shape[2:]) <= BLUR_KERNEL // 2:
            raise ValidationError(f"baseline 'blur' needs images larger than {BLUR_KERNEL // 2} pixels a side, got "
                                  f"{tuple(shape[2:])}; use a constant baseline such as 0.0")
        return
    if isinstance(baseline, Sequence) and not isinstance(baseline, (str, bytes)):
        if len(baseline) != channels:
            raise ValidationError(f"baseline must give one value per channel ({channels}), got {len(baseline)}")
        for value in baseline:
            check_float(value, "each baseline value")
        return
    if isinstance(baseline, str) or isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
        raise ValidationError(f"baseline must be a number, one number per channel, or 'blur', got {baseline!r}")
    check_float(baseline, "baseline")


# ----------------------------------------------------------------------------------------- shared steps


def _chunks(count: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def target_probability(model: nn.Module, images: torch.Tensor, target: torch.Tensor, *,
                       task: str = "multiclass") -> torch.Tensor:
    """The probability of each image's ``target`` class: softmax (multiclass) or sigmoid (multilabel).

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> target_probability(net, torch.zeros(2, 1, 2, 2), torch.tensor([0, 2])).shape
    torch.Size([2])
    """
    check_choice(task, "task", TASKS)
    with torch.no_grad():
        logits = model(images)
    chosen = logits.gather(1, target.reshape(-1, 1).to(logits.device)).squeeze(1)
    if task == "multilabel":
        return torch.sigmoid(chosen)
    return torch.softmax(logits, dim=1).gather(1, target.reshape(-1, 1).to(logits.device)).squeeze(1)


def pixel_rank(maps: torch.Tensor) -> torch.Tensor:
    """Each pixel's position in the removal order, ``(N, H*W)``: 0 for the highest value of the map.

    Ties are broken by the row-major pixel index (a stable sort), so equal values go first to last
    from the top-left corner.

    Examples
    --------
    >>> pixel_rank(torch.tensor([[[0.1, 0.9], [0.5, 0.5]]]))
    tensor([[3, 0, 1, 2]])
    """
    flat = maps.reshape(maps.shape[0], -1)
    return rank_of_order(torch.sort(flat, dim=1, descending=True, stable=True).indices)


def rank_of_order(order: torch.Tensor) -> torch.Tensor:
    """The inverse permutation of each row: ``rank[i, order[i, k]] = k``.

    Examples
    --------
    >>> rank_of_order(torch.tensor([[1, 2, 3, 0]]))
    tensor([[3, 0, 1, 2]])
    """
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def curve_auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under each row of ``curve`` ``(N, steps + 1)``: the trapezoid rule over the fractions 0..1.

    Examples
    --------
    >>> curve_auc(torch.tensor([[1.0, 0.5, 0.0]]))
    tensor([0.5000])
    """
    steps = curve.shape[1] - 1
    if steps == 0:
        return curve[:, 0].clone()
    return (curve[:, :-1] + curve[:, 1:]).sum(dim=1) / (2 * steps)


# ----------------------------------------------------------------------------------------- deletion / insertion


def _baseline_images(inputs: torch.Tensor, baseline: float | Sequence[float] | str) -> torch.Tensor:
    if baseline == "blur":
        return gaussian_blur(inputs, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    value = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    return value.reshape(1, -1, 1, 1).expand_as(inputs) if value.dim() else value.expand_as(inputs)


def _perturbation_curve(model, inputs, maps, target, *, steps, baseline, batch_size, task, insert) -> torch.Tensor:
    """The target's probability after each step, ``(N, steps + 1)``; step 0 is the untouched start."""
    _check_case(model, inputs, maps, target)
    check_int(steps, "steps", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    check_choice(task, "task", TASKS)
    _check_baseline(baseline, inputs.shape)
    count, (height, width) = inputs.shape[0], inputs.shape[2:]
    pixels = height * width
    # After step k, the first floor(k * H * W / steps) pixels of the order are removed (or inserted).
    done = torch.div(torch.arange(steps + 1, device=inputs.device) * pixels, steps, rounding_mode="floor")
    curves = []
    with evaluating(model):
        for part in _chunks(count, batch_size):
            images, start = inputs[part], _baseline_images(inputs[part], baseline)
            chosen = pixel_rank(maps[part])[:, None, :] < done[None, :, None]  # (B, steps + 1, H*W)
            chosen = chosen.reshape(*chosen.shape[:2], 1, height, width)
            source, filler = (start, images) if insert else (images, start)
            perturbed = torch.where(chosen, filler[:, None], source[:, None]).flatten(0, 1)
            labels = target[part].repeat_interleave(steps + 1)
            curves.append(target_probability(model, perturbed, labels, task=task).reshape(-1, steps + 1))
    return torch.cat(curves)


def deletion_curve(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
                   steps: int = DEFAULT_STEPS, baseline: float | Sequence[float] | str = 0.0,
                   batch_size: int = DEFAULT_BATCH_SIZE, task: str = "multiclass") -> torch.Tensor:
    """The deletion curve: the target's probability as pixels are removed, ``(N, steps + 1)``.

    Point ``k`` (``k = 0 .. steps``) is the probability once the first ``floor(k * H * W / steps)``
    pixels of the map's order (highest first, ties by pixel index) are replaced by ``baseline``
    in every channel; point 0 is the untouched image, point ``steps`` the baseline alone.

    Parameters
    ----------
    model : nn.Module
        The classifier; run in eval mode, restored afterwards.
    inputs : Tensor
        Images ``(N, C, H, W)``, on the model's device.
    maps : Tensor
        Attribution maps ``(N, H, W)`` at input resolution (as :func:`apkit.explain` returns).
    target : Tensor
        The explained class of each image, integers ``(N,)``.
    steps : int
        Number of removal steps (>= 1).
    baseline : float, sequence of float or "blur"
        What a removed pixel becomes: a constant, one constant per channel, or ``"blur"``, the
        image blurred by a Gaussian (kernel 11, sigma 5, as in the paper).
    batch_size : int
        Images per forward pass, each with all its steps: ``batch_size * (steps + 1)`` perturbed images.
    task : {"multiclass", "multilabel"}
        Softmax over the classes, or a sigmoid of the target's logit.

    Returns
    -------
    Tensor
        ``(N, steps + 1)`` probabilities.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    >>> images, maps = torch.rand(2, 3, 4, 4), torch.rand(2, 4, 4)
    >>> deletion_curve(net, images, maps, torch.tensor([0, 1]), steps=4).shape
    torch.Size([2, 5])
    """
    return _perturbation_curve(model, inputs, maps, target, steps=steps, baseline=baseline,
                               batch_size=batch_size, task=task, insert=False)


def insertion_curve(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
                    steps: int = DEFAULT_STEPS, baseline: float | Sequence[float] | str = "blur",
                    batch_size: int = DEFAULT_BATCH_SIZE, task: str = "multiclass") -> torch.Tensor:
    """The insertion curve: the target's probability as pixels are added, ``(N, steps + 1)``.

    Point ``k`` is the probability of the ``baseline`` image (blurred by default, as in the paper)
    into which the first ``floor(k * H * W / steps)`` pixels of the map's order are copied from the
    image; point 0 is the baseline alone, point ``steps`` the image.  The parameters are those of
    :func:`deletion_curve`.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    >>> images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
    >>> insertion_curve(net, images, maps, torch.tensor([0, 1]), steps=2).shape
    torch.Size([2, 3])
    """
    return _perturbation_curve(model, inputs, maps, target, steps=steps, baseline=baseline,
                               batch_size=batch_size, task=task, insert=True)


@FAITHFULNESS_METRICS.register("deletion", help="area under the probability as the map's top pixels are "
                               "removed (Petsiuk et al. 2018); lower is more faithful")
def deletion(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
             steps: int = DEFAULT_STEPS, baseline: float | Sequence[float] | str = 0.0,
             batch_size: int = DEFAULT_BATCH_SIZE, task: str = "multiclass") -> torch.Tensor:
    """Deletion score (Petsiuk et al., 2018): the area under :func:`deletion_curve`, ``(N,)``.

    The area is the trapezoid rule over the ``steps + 1`` points at the removed fractions
    ``0, 1/steps, ..., 1`` (:func:`curve_auc`), so it lies in [0, 1]; lower means the probability
    falls sooner as the map's top pixels go, i.e. a more faithful map.  The parameters are those of
    :func:`deletion_curve`.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    >>> images, maps = torch.rand(2, 3, 4, 4), torch.rand(2, 4, 4)
    >>> deletion(net, images, maps, torch.tensor([0, 1])).shape
    torch.Size([2])
    """
    return curve_auc(deletion_curve(model, inputs, maps, target, steps=steps, baseline=baseline,
                                    batch_size=batch_size, task=task))


@FAITHFULNESS_METRICS.register("insertion", help="area under the probability as the map's top pixels are "
                               "added to a blurred image (Petsiuk et al. 2018); higher is more faithful")
def insertion(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
              steps: int = DEFAULT_STEPS, baseline: float | Sequence[float] | str = "blur",
              batch_size: int = DEFAULT_BATCH_SIZE, task: str = "multiclass") -> torch.Tensor:
    """Insertion score (Petsiuk et al., 2018): the area under :func:`insertion_curve`, ``(N,)``.

    The trapezoid rule over the inserted fractions ``0, 1/steps, ..., 1`` (:func:`curve_auc`);
    higher means the probability rises sooner, i.e. a more faithful map.  The parameters are those
    of :func:`deletion_curve` (the baseline defaults to ``"blur"``).

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    >>> images, maps = torch.rand(2, 3, 4, 4), torch.rand(2, 4, 4)
    >>> insertion(net, images, maps, torch.tensor([0, 1]), baseline=0.0).shape
    torch.Size([2])
    """
    return curve_auc(insertion_curve(model, inputs, maps, target, steps=steps, baseline=baseline,
                                     batch_size=batch_size, task=task))


# ----------------------------------------------------------------------------------------- ROAD


def _neighbour_sum(values: torch.Tensor) -> torch.Tensor:
    """The weighted sum of each pixel's eight neighbours (zero outside the image), per channel.

    The weights 1/6 (direct) and 1/12 (diagonal) are the separable kernel [1, 2, 1] x [1, 2, 1] / 12
    without its centre (4 / 12): two passes of shifted in-place additions, many times faster on the
    CPU than a grouped convolution, and the solver calls this once per iteration.
    """
    rows = 2 * values
    rows[..., 1:, :] += values[..., :-1, :]
    rows[..., :-1, :] += values[..., 1:, :]
    both = 2 * rows
    both[..., 1:] += rows[..., :-1]
    both[..., :-1] += rows[..., 1:]
    return (both - 4 * values) * DIAGONAL_WEIGHT


def _per_system(values: torch.Tensor) -> torch.Tensor:
    return values.sum(dim=(2, 3), keepdim=True)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, 0 where the denominator is 0 (a system already solved, or empty)."""
    tiny = torch.finfo(denominator.dtype).tiny
    return torch.where(denominator > 0, numerator / denominator.clamp(min=tiny), 0.0)


def _solve_by_conjugate_gradients(images: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Solve ``W_i x_i = sum_j w_j v_j`` for every removed pixel ``i`` by conjugate gradients.

    ``v_j`` is the neighbour's image value when kept and its unknown ``x_j`` when removed; ``W_i``
    is the sum of the weights of ``i``'s neighbours inside the image.  The system is symmetric and
    positive (semi)definite, one per image and channel, all solved at once.  Every iterate, residual
    and direction is zero outside the removed pixels, which the operator keeps so.
    """
    total_weight = _neighbour_sum(torch.ones_like(images[:1, :1]))

    def apply(x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(-_neighbour_sum(x), total_weight, x).mul_(removed)

    residual = _neighbour_sum(images * (1.0 - removed)).mul_(removed)
    solution, direction = torch.zeros_like(images), residual.clone()
    squared = _per_system(residual * residual)
    limit = (SOLVER_TOLERANCE ** 2) * squared
    for iteration in range(MAX_ITERATIONS):
        product = apply(direction)
        step = _ratio(squared, _per_system(direction * product))
        solution.addcmul_(step, direction)
        residual.addcmul_(step, product, value=-1.0)
        updated = _per_system(residual * residual)
        if iteration % _CHECK_EVERY == _CHECK_EVERY - 1 and bool((updated <= limit).all()):
            break
        direction.mul_(_ratio(updated, squared)).add_(residual)
        squared = updated
    else:
        worst = float((updated / limit.clamp(min=torch.finfo(images.dtype).tiny)).max().sqrt()) * SOLVER_TOLERANCE
        warnings.warn(f"noisy linear imputation stopped after {MAX_ITERATIONS} iterations with a relative "
                      f"residual of {worst:.1e} (asked {SOLVER_TOLERANCE:g}); the imputed pixels are approximate",
                      RuntimeWarning, stacklevel=4)
    return solution


@functools.lru_cache(maxsize=4)
def _grid_matrix(height: int, width: int):
    """The imputation's matrix over every pixel of an ``height x width`` image, ``diag(W) - N`` (scipy CSR).

    ``N`` holds the neighbour weights: the kernel [1, 2, 1] x [1, 2, 1] / 12 without its centre, a
    Kronecker product of two tridiagonal matrices (zero outside the image); ``W`` its row sums.
    """
    from scipy import sparse  # a dependency of scikit-learn, used only by the CPU solve

    def tridiagonal(size: int):
        return sparse.diags([1.0, 2.0, 1.0], [-1, 0, 1], shape=(size, size))

    neighbours = (sparse.kron(tridiagonal(height), tridiagonal(width)) - 4 * sparse.identity(height * width))
    neighbours = neighbours * DIAGONAL_WEIGHT
    return (sparse.diags(np.asarray(neighbours.sum(axis=1)).ravel()) - neighbours).tocsr()


def _solve_directly(images: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """The same systems as :func:`_solve_by_conjugate_gradients`, by a sparse LU factorisation (SuperLU), in float64.

    Each mask's system is restricted to its removed pixels and factorised once for all channels.
    It is symmetric positive definite whenever a pixel is kept (a region of removed pixels bounded
    only by the image's edge would be the whole image), so it is factorised without pivoting, with
    the minimum-degree ordering of a symmetric matrix.  The time does not depend on the shape of
    the removed region, where conjugate gradients need hundreds of iterations for large blobs.
    SuperLU runs one system at a time: the loop is over masks, each a factorisation.
    """
    from scipy.sparse.linalg import splu

    count, channels, height, width = images.shape
    right = _neighbour_sum(images * (1.0 - removed)).double().reshape(count, channels, -1).numpy()
    flags = removed.reshape(count, -1).bool().numpy()
    matrix = _grid_matrix(height, width)
    solution = np.zeros((count, channels, height * width))
    for index in range(count):
        unknowns = np.flatnonzero(flags[index])
        if 0 < len(unknowns) < height * width:
            system = matrix[unknowns][:, unknowns].tocsc()
            factors = splu(system, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
            solution[index][:, unknowns] = factors.solve(np.ascontiguousarray(right[index][:, unknowns].T)).T
    return torch.from_numpy(solution.reshape(images.shape)).to(images.dtype)


def _solve_imputation(images: torch.Tensor, removed: torch.Tensor, solver: str) -> torch.Tensor:
    """The imputed values (zero outside the removed pixels): a direct solve on the CPU, else conjugate gradients."""
    if solver == "direct" or (solver == "auto" and images.device.type == "cpu"):
        return _solve_directly(images.cpu(), removed.cpu()).to(images.device)
    return _solve_by_conjugate_gradients(images, removed)


def noisy_linear_imputation(images: torch.Tensor, removed: torch.Tensor, *, noise: float = DEFAULT_NOISE,
                            generator: torch.Generator | None = None, solver: str = "auto") -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al., 2022) of the ``removed`` pixels of ``images``.

    Every removed pixel becomes the weighted mean of its neighbours inside the image (weights 1/6
    for the direct and 1/12 for the diagonal neighbours), where removed neighbours are themselves
    unknowns: one sparse linear system per image, with one right-hand side per channel.  On the
    CPU (``solver="auto"`` or ``"direct"``) each system is restricted to its removed pixels and
    factorised once by SuperLU in float64, whatever the shape of the removed region.  On a GPU
    (``"auto"`` or ``"cg"``) all systems are solved at once by conjugate gradients to a relative
    residual of :data:`SOLVER_TOLERANCE` (the tests hold both solvers to a dense solve within 1e-4;
    a RuntimeWarning says when :data:`MAX_ITERATIONS` did not reach it); the number of iterations
    grows with the width of the largest removed region: scattered pixels take tens, the large blobs
    that a smooth map leaves at 224x224 take hundreds.  Then Gaussian noise of standard deviation
    ``noise`` is added to the removed pixels.  When every pixel is removed, nothing is left to
    impute from: the image becomes 0 plus noise.

    Parameters
    ----------
    images : Tensor
        ``(M, C, H, W)``.
    removed : Tensor
        ``(M, H, W)`` booleans, True where a pixel is removed (in every channel).
    noise : float
        Standard deviation of the added noise (>= 0).
    generator : torch.Generator, optional
        Source of the noise, on the images' device; draws from the global generator when None.
    solver : {"auto", "direct", "cg"}
        The sparse direct solve (computed on the CPU, the result moved back), conjugate gradients
        on the images' device, or "auto": direct for CPU tensors, conjugate gradients otherwise.

    Examples
    --------
    >>> image = torch.tensor([[[[1.0, 2.0, 3.0]] * 3]])
    >>> removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    >>> removed[0, 1, 1] = True
    >>> round(noisy_linear_imputation(image, removed, noise=0.0)[0, 0, 1, 1].item(), 4)
    2.0
    """
    check_tensor(images, "images", ndim=4, floating=True)
    check_tensor(removed, "removed", ndim=3)
    check_float(noise, "noise", minimum=0.0)
    check_choice(solver, "solver", SOLVERS)
    if removed.shape != (images.shape[0], *images.shape[2:]):
        raise ValidationError(f"removed must be (M, H, W) = {(images.shape[0], *images.shape[2:])}, "
                              f"got {tuple(removed.shape)}")
    mask = removed.to(images.dtype)[:, None]
    filled = _solve_imputation(images, mask, solver)
    if noise > 0:
        filled = filled + noise * torch.randn(images.shape, generator=generator, dtype=images.dtype,
                                              device=images.device)
    return torch.where(mask.bool(), filled, images)


def _road_removed(maps: torch.Tensor, percentages: tuple[float, ...], order: str) -> torch.Tensor:
    """``(N, P, H, W)`` booleans: the ``floor(p * H * W)`` first (MoRF) or last (LeRF) pixels of the order."""
    pixels = maps.shape[1] * maps.shape[2]
    # Rounded first, so that e.g. 0.29 * 100 = 28.999999999999996 removes 29 pixels, not 28.
    counts = torch.tensor([math.floor(round(p * pixels, 6)) for p in percentages], device=maps.device)
    rank = pixel_rank(maps)[:, None, :]
    removed = rank < counts[None, :, None] if order == "morf" else rank >= pixels - counts[None, :, None]
    return removed.reshape(maps.shape[0], len(percentages), *maps.shape[1:])


def road_images(inputs: torch.Tensor, maps: torch.Tensor, *, percentages: Sequence[float] = DEFAULT_PERCENTAGES,
                order: str = "morf", noise: float = DEFAULT_NOISE, generator: torch.Generator | None = None,
                solver: str = "auto") -> torch.Tensor:
    """ROAD's perturbed images ``(N, P, C, H, W)``: per percentage, the removed pixels imputed.

    See :func:`road` for the parameters and :func:`noisy_linear_imputation` for ``solver``; this is
    its input to the model, for inspection or for a score of one's own.

    Examples
    --------
    >>> road_images(torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), percentages=[0.5]).shape
    torch.Size([1, 1, 3, 8, 8])
    """
    check_tensor(inputs, "inputs", ndim=4, floating=True)
    check_tensor(maps, "maps", ndim=3, floating=True)
    chosen = _check_percentages(percentages)
    check_choice(order, "order", ORDERS)
    removed = _road_removed(maps, chosen, order).flatten(0, 1)
    repeated = inputs.repeat_interleave(len(chosen), dim=0)
    imputed = noisy_linear_imputation(repeated, removed, noise=noise, generator=generator, solver=solver)
    return imputed.reshape(inputs.shape[0], len(chosen), *inputs.shape[1:])


@FAITHFULNESS_METRICS.register("road", help="probability after removing a fraction of pixels by noisy linear "
                               "imputation, MoRF or LeRF (Rong et al. 2022)")
def road(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
         percentages: Sequence[float] = DEFAULT_PERCENTAGES, order: str = "morf", task: str = "multiclass",
         noise: float = DEFAULT_NOISE, seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """ROAD, RemOve And Debias (Rong et al., 2022): the target's probability per removed fraction, ``(N, P)``.

    For each fraction ``p`` of ``percentages``, the ``floor(p * H * W)`` pixels that come first
    (``order="morf"``, most relevant first) or last (``"lerf"``) in the map's order are filled by
    :func:`noisy_linear_imputation`, and the model scores the result.  A faithful map gives low
    MoRF and high LeRF probabilities; the paper summarises a curve by its mean over ``p``.

    Parameters
    ----------
    model, inputs, maps, target
        As for :func:`deletion_curve`.
    percentages : sequence of float
        Fractions of removed pixels, each in [0, 1].
    order : {"morf", "lerf"}
        Remove the most relevant pixels first, or the least relevant.
    task : {"multiclass", "multilabel"}
        Softmax over the classes, or a sigmoid of the target's logit.
    noise : float
        Standard deviation of the imputation's noise (0: none).
    seed : int
        Seed of the noise, drawn on the inputs' device; equal seeds and batch sizes give equal results.
    batch_size : int
        Images per forward pass, each with all its percentages.

    Returns
    -------
    Tensor
        ``(N, P)`` probabilities of the target class.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    >>> images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
    >>> road(net, images, maps, torch.tensor([0, 1]), percentages=[0.2, 0.5]).shape
    torch.Size([2, 2])
    """
    _check_case(model, inputs, maps, target)
    chosen = _check_percentages(percentages)
    check_choice(order, "order", ORDERS)
    check_choice(task, "task", TASKS)
    check_int(seed, "seed", minimum=0)
    check_int(batch_size, "batch_size", minimum=1)
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    scores = []
    with evaluating(model):
        for part in _chunks(inputs.shape[0], batch_size):
            perturbed = road_images(inputs[part], maps[part], percentages=chosen, order=order, noise=noise,
                                    generator=generator).flatten(0, 1)
            labels = target[part].repeat_interleave(len(chosen))
            scores.append(target_probability(model, perturbed, labels, task=task).reshape(-1, len(chosen)))
    return torch.cat(scores)
