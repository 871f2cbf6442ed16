"""The registry of architectures (:data:`MODELS`), :func:`create` and :func:`count_parameters`."""

from __future__ import annotations

from torch import nn

from apkit.core.errors import ValidationError
from apkit.core.registry import Registry
from apkit.core.validation import check_int
from apkit.models.resnet import resnet
from apkit.models.vgg import CONFIGS, VGG, scale_config

MODELS: Registry = Registry("model")


def _vgg(config_name: str, default_size: int):
    def build(num_classes: int, *, width_divisor: int = 1, input_size: int = default_size,
              dropout: float = 0.5) -> VGG:
        return VGG(scale_config(CONFIGS[config_name], width_divisor), num_classes, input_size, dropout)

    return build


MODELS.register("vgg16_bn", _vgg("vgg16", 227),
                help="VGG16-BN with the paper's VOC head (Dropout + Linear on the 7x7 map); width_divisor 1/2/4/8")
MODELS.register("vgg11_bn", _vgg("vgg11", 227), help="VGG11-BN with the same head (the ROAR classifier)")
MODELS.register("vgg_small", _vgg("vgg_small", 64),
                help="small VGG-BN for the synthetic data (0.29M parameters): Grad-CAM at the last conv block "
                     "(S/8: 6x6 at 48x48, 8x8 at 64x64), matching at the last max-pool (S/16)")
for _depth in (18, 34, 50):
    MODELS.register(
        f"resnet{_depth}",
        lambda num_classes, _d=_depth: resnet(_d, num_classes),
        help=f"torchvision ResNet-{_depth}, random initialisation",
    )


def create(name: str, *, num_classes: int, **options) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` outputs.

    Parameters
    ----------
    name : str
        One of :data:`MODELS` (``apkit list`` shows them).
    num_classes : int
        Number of logits.
    **options
        Architecture options, e.g. ``width_divisor`` and ``input_size`` for the VGGs.

    Returns
    -------
    torch.nn.Module
        The model, with ``attribution_layer``, ``matching_layer`` and ``apkit_config``
        (the recipe :func:`save_checkpoint` stores) attributes.
    """
    check_int(num_classes, "num_classes", minimum=1)
    builder = MODELS.get(name)
    try:
        model = builder(num_classes, **options)
    except TypeError as exc:  # an option the builder does not take
        raise ValidationError(f"model {name!r} does not accept options {sorted(options)}: {exc}") from exc
    model.apkit_config = {"name": name, "num_classes": num_classes, "options": dict(options)}
    return model


def count_parameters(model: nn.Module, *, nonzero: bool = False) -> int:
    """Number of parameters of ``model`` (only the non-zero ones if ``nonzero``)."""
    if nonzero:
        return int(sum(int(p.count_nonzero()) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))
