"""What every attribution method shares: input checks, the model guard, and the ``Method`` base class.

Methods speak Captum's vocabulary: ``Method(model, layer=...)`` then ``.attribute(inputs, target=...)``
returns the raw attribution (Captum's shapes), and ``.heatmap(inputs, target)`` returns the map the
paper evaluates, ``(M, H, W)`` at input resolution.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
from collections.abc import Iterator

import torch
from torch import nn

from apkit.attribution import postprocess
from apkit.attribution.targets import as_pairs
from apkit.core.errors import ValidationError
from apkit.core.modules import evaluating, get_layer
from apkit.core.validation import check_int, check_module, check_tensor
from apkit.models import default_layer
from apkit.models.quantized import is_quantized


def check_inputs(inputs: object) -> torch.Tensor:
    """Check ``inputs`` is a finite float image batch ``(N, C, H, W)``; return it."""
    inputs = check_tensor(inputs, "inputs", ndim=4, floating=True, finite=True)
    if inputs.shape[0] == 0:
        raise ValidationError("inputs must hold at least one image, got an empty batch")
    return inputs


def check_batch_size(batch_size: object) -> int | None:
    """``None`` (the caller's default) or a positive integer."""
    return None if batch_size is None else check_int(batch_size, "batch_size", minimum=1)


def check_layer_output(model: nn.Module, layer: str, shape: torch.Size | None, inputs: torch.Tensor) -> None:
    """Raise unless ``shape``, that of ``layer``'s output, is a map ``(N, K, h, w)``; the error names one that is.

    Layer methods (Grad-CAM, Excitation Backprop) upsample a per-location map; a layer of the
    classifier has no locations.  The suggestion is the model's default attribution layer for
    ``inputs`` (one more forward pass, on the error path only).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    >>> try:
    ...     check_layer_output(net, "3", torch.Size([1, 2]), torch.zeros(1, 3, 8, 8))
    ... except ValidationError as error:
    ...     print(error)
    layer '3' outputs (N, 2), not a (N, K, h, w) map; pass a convolutional layer such as '1'
    """
    if shape is not None and len(shape) == 4:
        return
    got = "no tensor" if shape is None else "(" + ", ".join(["N", *(str(d) for d in shape[1:])]) + ")"
    try:
        suggestion = default_layer(model, "attribution", inputs[:1])
    except ValidationError:  # no spatial map at all for these inputs: say only what is wrong
        suggestion = None
    such = f" such as {suggestion!r}" if suggestion is not None and suggestion != layer else ""
    raise ValidationError(f"layer {layer!r} outputs {got}, not a (N, K, h, w) map; pass a convolutional layer{such}")


def _check_channels(model: nn.Module, inputs: torch.Tensor) -> None:
    """Refuse images whose channel count the model's first convolution does not take."""
    first = next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first[1].in_channels != inputs.shape[1]:
        raise ValidationError(
            f"inputs have {inputs.shape[1]} channel(s) but the model's first convolution ({first[0]!r}) takes "
            f"{first[1].in_channels}; pass images with {first[1].in_channels} channels, normalised as in training"
        )


def check_same_dtype_and_device(model: nn.Module, inputs: torch.Tensor) -> None:
    """Refuse inputs of another floating type or on another device than the model's weights, before any pass.

    Examples
    --------
    >>> try:
    ...     check_same_dtype_and_device(nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 4, 4, dtype=torch.float16))
    ... except ValidationError as error:
    ...     print(str(error).split(";")[0])
    inputs are torch.float16 but the model's weights are torch.float32
    """
    weight = next(iter(model.parameters()), None)
    if weight is None:
        return
    if inputs.device != weight.device:
        raise ValidationError(f"inputs are on {inputs.device} but the model is on {weight.device}; move both to one "
                              f"device: inputs.to({str(weight.device)!r}) or model.to({str(inputs.device)!r})")
    if inputs.dtype != weight.dtype:
        raise ValidationError(f"inputs are {inputs.dtype} but the model's weights are {weight.dtype}; pass "
                              f"inputs.to({weight.dtype}) (or convert the model)")


def check_classes(pairs: torch.Tensor, num_classes: int) -> None:
    """Raise if a target class index is not a valid logit index."""
    if pairs.numel() and int(pairs[:, 1].max()) >= num_classes:
        raise ValidationError(
            f"target class {int(pairs[:, 1].max())} is out of range: the model has {num_classes} outputs "
            f"(valid classes 0..{num_classes - 1})"
        )


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Switch off ``requires_grad`` of every parameter inside the block; restore each flag afterwards.

    An attribution that needs gradients only with respect to activations then records no graph
    for the layers below them, which saves the memory of all their activations.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def chunks(pairs: torch.Tensor, batch_size: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Split (image, class) pairs into chunks of at most ``batch_size`` pairs, grouped by image.

    Yields ``(positions, images, local_pairs)``: the positions of the chunk's pairs in ``pairs``,
    the indices of the images the chunk needs (each once), and the chunk's pairs with image
    indices renumbered into ``images``.  Pairs of one image stay together as far as the chunk
    size allows, so each image is forwarded as few times as possible.
    """
    order = torch.argsort(pairs[:, 0], stable=True)
    step = batch_size or max(len(order), 1)
    for start in range(0, len(order), step):
        positions = order[start:start + step]
        images, local = torch.unique(pairs[positions, 0], return_inverse=True)
        yield positions, images, torch.stack([local, pairs[positions, 1]], 1)


def gather_chunks(pieces: list[tuple[torch.Tensor, torch.Tensor]], count: int) -> torch.Tensor:
    """Put per-chunk results back in the order of the original pairs (differentiably)."""
    positions = torch.cat([p for p, _ in pieces])
    values = torch.cat([v for _, v in pieces])
    inverse = torch.empty_like(positions)
    inverse[positions] = torch.arange(count, device=positions.device)
    return values[inverse]


class Method(abc.ABC):
    """Base class of apkit's attribution methods.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier to explain.  It is run in eval mode during attribution and left exactly
        as it was (mode, parameters, hooks).
    layer : str, optional
        Dotted module name.  Layer methods (Grad-CAM, Excitation Backprop) default to the
        model's attribution layer: the one a model built by apkit names, or for any other model
        the one :func:`apkit.models.default_layer` chooses on the images of each call (so the
        maps fit their size); input methods (LRP, RAP) propagate to the input when ``None``.

    Subclasses implement :meth:`_attribute`, which returns the raw attribution of each pair and
    the pair's target logit, and set ``is_layer_method``.
    """

    name = "method"
    is_layer_method = False  # needs a layer (defaults to the model's attribution layer)
    accepts_layer = True  # input methods may still stop at a layer
    default_batch_size = 64  # pairs per pass when the caller gives none

    def __init__(self, model: nn.Module, layer: str | None = None):
        self.model = check_module(model)
        if is_quantized(model):  # int8 kernels have no gradients
            raise ValidationError(f"{type(model).__name__} is an int8 model, which has no gradients; explain its "
                                  "fake-quant twin (apkit.models.quantized.quantized_twin(model)), or call "
                                  "apkit.explain, which does")
        if layer is not None and not self.accepts_layer:
            raise ValidationError(f"{self.name} attributes to the input and takes no layer; pass layer=None")
        # A layer method without a layer takes the one the model names, or else chooses one per call.
        self._choose_layer = layer is None and self.is_layer_method
        if self._choose_layer:
            declared = getattr(model, "attribution_layer", None)
            if isinstance(declared, str):
                layer, self._choose_layer = declared, False
        if layer is not None:
            get_layer(model, layer)  # unknown names raise, listing the known ones
        self._layer = layer

    @property
    def layer(self) -> str | None:
        """The layer explained: the one given, the one the model names, or the one the last call chose.

        Before the first call of a method that chooses its layer, the choice for a zero image
        (see :func:`apkit.models.default_layer`), or ``None`` where that probe fails.  ``None``
        for an input method that propagates to the input.
        """
        if self._layer is None and self._choose_layer:
            try:
                return default_layer(self.model, "attribution")
            except ValidationError:
                return None
        return self._layer

    @layer.setter
    def layer(self, layer: str | None) -> None:
        self._layer = layer

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self._layer!r})"

    # -- public API -----------------------------------------------------------------------------
    def attribute(self, inputs: torch.Tensor, target, *, batch_size: int | None = None, **options) -> torch.Tensor:
        """Raw attribution of each (image, class) pair, in Captum's shapes.

        Parameters
        ----------
        inputs : Tensor (N, C, H, W)
        target : int, LongTensor (N,) or LongTensor (M, 2)
            One class for every image, one class per image, or (image_index, class_index) pairs.
        batch_size : int, optional
            At most this many pairs per forward/backward pass (bounds memory); default
            ``default_batch_size`` of the method.

        Returns
        -------
        Tensor
            ``(M, 1, h, w)`` for layer methods, ``(M, C, H, W)`` for input methods; M is the number
            of pairs (N for a per-image target).
        """
        return self._run(inputs, target, batch_size, options)[0]

    def heatmap(self, inputs: torch.Tensor, target, *, batch_size: int | None = None, **options) -> torch.Tensor:
        """The map the paper evaluates, ``(M, H, W)`` at the input's resolution."""
        attributions, logits = self._run(inputs, target, batch_size, options)
        if attributions.dim() != 4:
            raise ValidationError(
                f"{self.name} at layer {self.layer!r} gives attributions of shape (M, "
                f"{', '.join(map(str, attributions.shape[1:]))}), not a spatial (M, K, h, w) map, so they cannot "
                "be drawn as a heatmap; pass a convolutional layer, or layer=None for input methods"
            )
        return self._to_heatmap(attributions, logits, tuple(inputs.shape[-2:]))

    # -- to implement -----------------------------------------------------------------------------
    @abc.abstractmethod
    def _attribute(self, inputs: torch.Tensor, pairs: torch.Tensor, **options) -> tuple[torch.Tensor, torch.Tensor]:
        """Attribution and target logit of each pair; ``inputs`` holds exactly the images needed."""

    def _to_heatmap(self, attributions: torch.Tensor, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return postprocess.to_input_resolution(postprocess.sum_channels(attributions), size)

    def _session(self) -> contextlib.AbstractContextManager:
        """What one call sets up for its chunks (inside eval mode), e.g. the traced graph of rule methods."""
        return contextlib.nullcontext()

    # -- shared machinery ---------------------------------------------------------------------------
    def _options(self) -> list[str] | None:
        """Names of the keyword options the method takes (``None``: anything, checked downstream)."""
        parameters = inspect.signature(self._attribute).parameters.values()
        return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def _run(self, inputs, target, batch_size, options) -> tuple[torch.Tensor, torch.Tensor]:
        accepted = self._options()
        unknown = sorted(set(options) - set(accepted)) if accepted is not None else []
        if unknown:
            raise ValidationError(
                f"{self.name} does not take option(s) {', '.join(unknown)}; "
                f"its options are: {', '.join(accepted) or 'none'} (and batch_size)"
            )
        inputs = check_inputs(inputs)
        _check_channels(self.model, inputs)
        check_same_dtype_and_device(self.model, inputs)
        batch_size = self.default_batch_size if batch_size is None else check_batch_size(batch_size)
        pairs = as_pairs(target, inputs.shape[0], device=inputs.device)
        if len(pairs) == 0:
            raise ValidationError("target selects no (image, class) pair; pass at least one")
        if self._choose_layer:  # by the probe, on these images: the layer's map must fit their size
            self._layer = default_layer(self.model, "attribution", inputs[:1])
        results, logits = [], []
        with evaluating(self.model), self._session():
            for positions, images, local in chunks(pairs, batch_size):
                attribution, logit = self._attribute(inputs[images], local, **options)
                results.append((positions, attribution))
                logits.append((positions, logit))
        return gather_chunks(results, len(pairs)), gather_chunks(logits, len(pairs))
