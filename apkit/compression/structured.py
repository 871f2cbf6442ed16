"""Structured (filter) pruning with Torch-Pruning: whole output channels are removed.

The default importance is Li et al.'s L1 filter norm, ``sum |W[o, :, :, :]|`` of each conv's own
filters (``MagnitudeImportance(p=1, group_reduction="first")``), and ``floor(C * (1 - ratio))``
filters are kept per layer.  Torch-Pruning's dependency graph slices everything that consumes a
pruned channel: the following BatchNorm and conv, the residual partners of a ResNet (coupled
channels are pruned together) and the columns of a Linear layer after ``flatten`` - for the
paper's VGG head that is ``channel_mask.repeat_interleave(h * w)``, the channel-major layout of the
flattened map (not ``repeat``).

Examples
--------
>>> import torch
>>> from apkit import models
>>> net = models.create("vgg_small", num_classes=8)
>>> pruned = prune_structured(net, example_inputs=torch.randn(1, 3, 64, 64), pruning_ratio=0.5)
>>> vgg_config(net), vgg_config(pruned)
([16, 'M', 32, 'M', 64, 64, 'M', 128, 128, 'M'], [8, 'M', 16, 'M', 32, 32, 'M', 64, 64, 'M'])
>>> pruned.classifier[1].in_features  # 64 channels x 4 x 4 positions
1024
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from apkit.compression.unstructured import clone_model
from apkit.core.errors import ValidationError
from apkit.core.modules import get_layer
from apkit.core.validation import check_choice, check_fraction, check_int, check_module, check_tensor

IMPORTANCES = ("l1", "group_l1")
SCHEMES = ("uniform", "paper-vgg16")
# 0-based positions of conv1 and conv8-13 among VGG16's 13 convs: the paper's (Li et al.'s) layers.
PAPER_VGG16_CONVS = (0, 7, 8, 9, 10, 11, 12)


def _importance(name: str):
    check_choice(name, "importance", IMPORTANCES)
    if name == "l1":  # Li et al.: each conv's own filter norm
        return tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    return tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="mean")


def conv_layer_names(model: nn.Module) -> list[str]:
    """Dotted names of the model's ``Conv2d`` layers, in registration order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def paper_vgg16_ratios(model: nn.Module, ratio: float = 0.7) -> dict[str, float]:
    """The paper's layer-wise scheme for VGG16: ``ratio`` on conv1 and conv8-13, the rest untouched.

    Parameters
    ----------
    model : torch.nn.Module
        A VGG16 (13 convolutions).
    ratio : float
        Fraction of filters removed from each listed layer (0.7 gives the paper's 3.27M model).

    Returns
    -------
    dict
        ``{layer name: ratio}`` for :func:`prune_structured`'s ``pruning_ratio_dict``.
    """
    check_fraction(ratio, "ratio")
    convs = conv_layer_names(model)
    if len(convs) != 13:
        raise ValidationError(
            f"the paper's scheme (conv1 and conv8-13) needs a VGG16 with 13 convolutions, got {len(convs)}; "
            "use pruning_ratio (uniform) or pruning_ratio_dict (per layer) instead"
        )
    return {convs[i]: ratio for i in PAPER_VGG16_CONVS}


def vgg_config(model: nn.Module) -> list:
    """Channel counts and max-pools ("M") of a VGG-style ``model.features``, e.g. after pruning."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ValidationError(f"{type(model).__name__} has no 'features' sequence; vgg_config applies to VGGs")
    return [m.out_channels if isinstance(m, nn.Conv2d) else "M"
            for m in features if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]


def _logits(model: nn.Module, example_inputs: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(example_inputs)
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ValidationError("structured pruning needs a model whose forward returns one tensor of logits")
    return out


def _output_layers(model: nn.Module, out: torch.Tensor) -> list[nn.Module]:
    """The layer whose outputs are the logits: the last Linear (or conv, as SqueezeNet's) with as many outputs."""
    classes = out.shape[-1] if out.dim() > 1 else out.shape[0]
    heads = [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == classes)]
    return heads[-1:]


#: Architectures whose channels Torch-Pruning's dependency graph cannot slice consistently, and why.
REFUSED = {
    "ShuffleNetV2": "its channel shuffle interleaves the channels of two branches, which the dependency graph "
                    "cannot follow",
    "VisionTransformer": "attention heads must be pruned with their head count, which channel pruning does not "
                         "update",
    "SwinTransformer": "attention heads must be pruned with their head count, which channel pruning does not "
                       "update",
    "MaxVit": "attention heads must be pruned with their head count, which channel pruning does not update",
}


def check_prunable(model: nn.Module) -> None:
    """Refuse architectures structured pruning cannot handle, saying why and what to use instead.

    Refused: torchvision's ShuffleNetV2 (channel shuffle) and the attention models (ViT, Swin,
    MaxViT, and any model with ``nn.MultiheadAttention``).  Accepted, among others: ResNet,
    ResNeXt, Wide ResNet, MobileNetV2/V3, EfficientNet (V1, V2), RegNet, MNASNet, DenseNet,
    ConvNeXt, SqueezeNet, GoogLeNet, VGG and AlexNet.
    """
    why = REFUSED.get(type(model).__name__)
    if why is None and any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        why = REFUSED["VisionTransformer"]
    if why is not None:
        raise ValidationError(f"structured pruning does not support {type(model).__name__}: {why}; use unstructured "
                              "pruning (method 'unstructured') or distillation into a smaller student (method 'kd')")


def prune_structured(
    model: nn.Module,
    *,
    example_inputs: torch.Tensor,
    pruning_ratio: float = 0.0,
    pruning_ratio_dict: Mapping[str, float] | None = None,
    ignored_layers: Sequence[str] | None = None,
    importance: str = "l1",
    global_pruning: bool = False,
    round_to: int | None = None,
    inplace: bool = False,
) -> nn.Module:
    """One-shot filter pruning of ``model`` (a pruned copy unless ``inplace``).

    Parameters
    ----------
    model : torch.nn.Module
        Any CNN Torch-Pruning can trace (VGG, ResNet, torchvision's CNNs; see :func:`check_prunable`
        for those refused).
    example_inputs : torch.Tensor
        A batch of the model's input shape, on the model's device (traced once).
    pruning_ratio : float
        Fraction of output channels removed from every prunable layer not in
        ``pruning_ratio_dict`` (0 leaves them alone).
    pruning_ratio_dict : mapping, optional
        ``{layer name: ratio}`` per layer, e.g. :func:`paper_vgg16_ratios`.
    ignored_layers : sequence of str, optional
        Layers whose output channels are kept.  The classifier producing the logits is always kept.
    importance : {"l1", "group_l1"}
        ``"l1"``: each conv's own filter L1 norm (Li et al.); ``"group_l1"``: the mean L1 norm over
        all layers coupled to the channel (e.g. a ResNet's residual partners).
    global_pruning : bool
        Rank channels across layers instead of per layer (Torch-Pruning's global pruning).
    round_to : int, optional
        Keep a multiple of ``round_to`` channels per layer.
    inplace : bool
        Prune ``model`` itself instead of a copy.

    Returns
    -------
    torch.nn.Module
        The pruned model (a VGG's ``config`` attribute is updated to its new widths).
    """
    check_module(model)
    check_tensor(example_inputs, "example_inputs", floating=True)
    check_fraction(pruning_ratio, "pruning_ratio")
    ratios = dict(pruning_ratio_dict or {})
    for name, ratio in ratios.items():
        check_fraction(ratio, f"pruning ratio of {name!r}")
    if round_to is not None:
        check_int(round_to, "round_to", minimum=1)
    ignored = list(ignored_layers or ())
    if isinstance(ignored_layers, str):
        raise ValidationError(f"ignored_layers must be a list of layer names, got the string {ignored_layers!r}")
    check_prunable(model)
    scorer = _importance(importance)
    target = model if inplace else clone_model(model)
    example_inputs = example_inputs.to(next(target.parameters()).device)
    layer_ratios = {get_layer(target, name): ratio for name, ratio in ratios.items()}
    before = _logits(target, example_inputs)
    ignored_modules = [get_layer(target, name) for name in ignored] + _output_layers(target, before)
    was_training = target.training
    target.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            target, example_inputs, importance=scorer, global_pruning=global_pruning,
            pruning_ratio=pruning_ratio, pruning_ratio_dict=layer_ratios, ignored_layers=ignored_modules,
            round_to=round_to,
        )
        pruner.step()
    except (RuntimeError, ValueError, ZeroDivisionError, KeyError, IndexError) as exc:
        raise ValidationError(f"Torch-Pruning could not prune {type(model).__name__} ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); use unstructured pruning or distillation, or leave the failing "
                              "layers out with ignored_layers") from exc
    finally:
        target.train(was_training)
    after = _logits(target, example_inputs)
    if after.shape != before.shape:
        raise ValidationError(f"pruning changed the output of {type(model).__name__} from {tuple(before.shape)} to "
                              f"{tuple(after.shape)}; leave its classifier out with ignored_layers")
    if isinstance(getattr(target, "config", None), list) and isinstance(getattr(target, "features", None),
                                                                         nn.Sequential):
        target.config = vgg_config(target)
    return target
