"""The settings of one compression run: named profiles (``"quick"``, ``"paper"``, ``"imagenet"``) and overrides.

* ``"quick"`` - the embedded synthetic data on a laptop CPU (vgg_small teacher): KD into
  vgg_small/2 for 8 epochs; structured pruning of 60 % of every conv's filters + 2 epochs;
  unstructured pruning of 90 % of the conv weights in one shot + 2 epochs.  The same for all four
  regularizer variants.
* ``"paper"`` - PASCAL VOC 2012 (METHOD §5 and §9): KD into VGG16-BN/8, 350 epochs; structured
  rho = 0.7 on conv1 and conv8-13, 60 epochs at lr 1e-3; unstructured 16 steps of 20 % with 30
  epochs each at lr 1e-3.
* ``"imagenet"`` - the supplement's ImageNet protocol: one-shot unstructured pruning (set
  ``amount=0.6`` or ``0.9``) with 10 epochs at batch 180; structured pruning of 10 % of the
  channels (ResNet-34) with 20 epochs.

Quantization is the same in every profile: ``ptq`` calibrates on 8 batches of training images,
``qat`` fine-tunes for 2 epochs at lr 0.001; both at 8-bit weights (``bits=4`` for 4-bit).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apkit.compression.quantization import QuantizationSettings
from apkit.compression.structured import IMPORTANCES, SCHEMES
from apkit.compression.unstructured import iterative_sparsity, layer_types_of
from apkit.core.errors import ValidationError, unknown_name
from apkit.core.names import COMPRESSION_METHOD_NAMES, NAIVE, REGULARIZER_NAMES, SETTINGS_PROFILE_NAMES
from apkit.core.validation import check_choice, check_float, check_fraction, check_int
from apkit.models import MODELS
from apkit.training import RECIPES, Recipe

__all__ = ["REGULARIZER_SETTINGS", "DistillationSettings", "MatchingSettings", "Settings", "StructuredSettings",
           "UnstructuredSettings", "check_regularizer_settings", "default_settings", "resolve_settings"]


def _as_tuple(value: object, name: str) -> tuple:
    if isinstance(value, str):
        raise ValidationError(f"{name} must be a list, got the string {value!r}")
    return tuple(value)


def _as_dict(value: object, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"{name} must be a mapping, got {type(value).__name__}")
    return dict(value)


@dataclass(frozen=True)
class MatchingSettings:
    """The attribution-matching regularizer's settings (unused, and refused if set, with ``"none"``).

    Attributes
    ----------
    weight : float, optional
        Strength on the paper's scale, for a 7x7 map; None: 100 for EWA, 50 for SWA and SSWA.
    scale_weight : bool
        Multiply the weight by ``h * w / 49`` for an ``h x w`` matching map (see
        :class:`apkit.regularizers.AttributionMatchingLoss`).
    drop : float, optional
        SSWA: fraction of the teacher's channels left out per batch; None: 0.3.
    teacher_layer, student_layer : str, optional
        Matching layers; None: each model's ``matching_layer``.
    resize : bool
        Resize the student's map to the teacher's when their sizes differ.
    """

    weight: float | None = None
    scale_weight: bool = True
    drop: float | None = None
    teacher_layer: str | None = None
    student_layer: str | None = None
    resize: bool = False

    def __post_init__(self) -> None:
        if self.weight is not None:
            check_float(self.weight, "weight", minimum=0.0)
        if self.drop is not None:
            check_fraction(self.drop, "drop")


@dataclass(frozen=True)
class DistillationSettings:
    """Knowledge distillation: the student and the KD loss.

    Attributes
    ----------
    student : str, optional
        A registered architecture; None: the teacher's.
    student_options : dict
        Extra options of the student's builder.
    width_divisor : int, optional
        The student's channel divisor.
    temperature, alpha : float
        KD temperature (> 0) and the KD term's share of the loss (in [0, 1]).
    """

    student: str | None = None
    student_options: Mapping[str, Any] = field(default_factory=dict)
    width_divisor: int | None = 8
    temperature: float = 4.0
    alpha: float = 0.9

    def __post_init__(self) -> None:
        object.__setattr__(self, "student_options", _as_dict(self.student_options, "student_options"))
        if self.student is not None:
            MODELS.get(self.student)
        check_float(self.temperature, "temperature", minimum=0.0, exclusive_minimum=True)
        check_fraction(self.alpha, "alpha", allow_one=True)
        if self.width_divisor is not None:
            check_int(self.width_divisor, "width_divisor", minimum=1)


@dataclass(frozen=True)
class StructuredSettings:
    """Structured (filter) pruning.

    Attributes
    ----------
    pruning_ratio : float
        Fraction of filters removed per layer.
    scheme : {"uniform", "paper-vgg16"}
        ``"uniform"``: every conv; ``"paper-vgg16"``: conv1 and conv8-13 of VGG16.
    pruning_ratio_dict : dict
        ``{layer name: ratio}``, overrides the scheme per layer.
    ignored_layers : tuple of str
        Layers left unpruned.
    importance : {"l1", "group_l1"}
    global_pruning : bool
    round_to : int, optional
    """

    pruning_ratio: float = 0.7
    scheme: str = "uniform"
    pruning_ratio_dict: Mapping[str, float] = field(default_factory=dict)
    ignored_layers: tuple[str, ...] = ()
    importance: str = "l1"
    global_pruning: bool = False
    round_to: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pruning_ratio_dict", _as_dict(self.pruning_ratio_dict, "pruning_ratio_dict"))
        object.__setattr__(self, "ignored_layers", _as_tuple(self.ignored_layers, "ignored_layers"))
        check_fraction(self.pruning_ratio, "pruning_ratio")
        check_choice(self.scheme, "structured pruning scheme", SCHEMES)
        check_choice(self.importance, "importance", IMPORTANCES)
        for name, ratio in self.pruning_ratio_dict.items():
            check_fraction(ratio, f"pruning ratio of {name!r}")


@dataclass(frozen=True)
class UnstructuredSettings:
    """Unstructured (magnitude) pruning: ``amount`` of the remaining weights removed per step.

    The final sparsity is ``1 - (1 - amount) ** steps`` (one step = one-shot).  ``layers`` names
    the layers pruned, under one global threshold: ``["conv"]`` (every convolution, the paper's
    choice) or ``["conv", "linear"]`` (every convolution and fully connected layer).
    """

    amount: float = 0.2
    steps: int = 1
    layers: tuple[str, ...] = ("conv",)

    def __post_init__(self) -> None:
        check_fraction(self.amount, "amount")
        check_int(self.steps, "steps", minimum=1)
        object.__setattr__(self, "layers", _as_tuple(self.layers, "layers"))
        layer_types_of(self.layers)

    @property
    def final_sparsity(self) -> float:
        """The conv-weight sparsity after all steps."""
        return iterative_sparsity(self.steps, self.amount)


#: The settings of each compression method.
METHOD_SETTINGS = {"kd": DistillationSettings, "structured": StructuredSettings, "unstructured": UnstructuredSettings,
                   "ptq": QuantizationSettings, "qat": QuantizationSettings}
#: The settings of the attribution-matching regularizer (refused with regularizer "none").
REGULARIZER_SETTINGS = tuple(f.name for f in dataclasses.fields(MatchingSettings))


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class Settings:
    """Every setting of one compression run: its training recipe, the regularizer's and the method's settings.

    Each setting has one flat name (``epochs``, ``weight``, ``pruning_ratio``, ...), used by
    :func:`default_settings`, ``--set KEY=VALUE`` and ``record.json``; :meth:`from_values` and
    :meth:`to_dict` translate.

    Attributes
    ----------
    method : {"kd", "structured", "unstructured", "ptq", "qat"}
    train : Recipe
        The training (:func:`apkit.training.fit`); ``epochs`` is per step for iterative pruning.
    matching : MatchingSettings
        The regularizer's settings (ignored with ``regularizer="none"``).
    cache_teacher : bool
        Compute the teacher's logits and matching evidence once per training image when the
        training set is ``deterministic`` (no random augmentation), instead of once per image and
        epoch; the training is the same.
    method_settings : DistillationSettings, StructuredSettings, UnstructuredSettings or QuantizationSettings
        The method's own settings; default: that class's defaults.
    """

    method: str
    train: Recipe
    matching: MatchingSettings = field(default_factory=MatchingSettings)
    cache_teacher: bool = True
    method_settings: (DistillationSettings | StructuredSettings | UnstructuredSettings | QuantizationSettings
                      | None) = None

    def __post_init__(self) -> None:
        check_choice(self.method, "compression method", COMPRESSION_METHOD_NAMES)
        expected = METHOD_SETTINGS[self.method]
        if self.method_settings is None:
            object.__setattr__(self, "method_settings", expected())
        if not isinstance(self.method_settings, expected):
            raise ValidationError(f"method {self.method!r} takes {expected.__name__} as its method_settings, "
                                  f"got {type(self.method_settings).__name__}")
        if not isinstance(self.train, Recipe) or not isinstance(self.matching, MatchingSettings):
            raise ValidationError("train must be a Recipe and matching a MatchingSettings; build settings with "
                                  "default_settings or Settings.from_values")

    @staticmethod
    def keys_for(method: str) -> tuple[str, ...]:
        """The flat names of the settings that apply to ``method`` (without ``method`` itself)."""
        return (*Recipe.field_names(), *REGULARIZER_SETTINGS, "cache_teacher", *_names(METHOD_SETTINGS[method]))

    @classmethod
    def from_values(cls, method: str, values: Mapping[str, Any]) -> Settings:
        """The settings of ``method`` from flat values (``{"epochs": 2, "lr": 0.1, "weight": 10, ...}``).

        ``epochs`` and ``lr`` are required; an unknown name, or one of another method, is refused.
        """
        check_choice(method, "compression method", COMPRESSION_METHOD_NAMES)
        for key in values:
            if key not in cls.keys_for(method):
                # A ValidationError like every other bad setting; the message is the one unknown-name message.
                raise ValidationError(str(unknown_name(key, f"{method} setting", cls.keys_for(method))))

        def pick(names: tuple[str, ...]) -> dict[str, Any]:
            return {k: values[k] for k in names if k in values}

        return cls(method=method, train=Recipe.from_dict(pick(Recipe.field_names())),
                   matching=MatchingSettings(**pick(REGULARIZER_SETTINGS)),
                   method_settings=METHOD_SETTINGS[method](**pick(_names(METHOD_SETTINGS[method]))),
                   **pick(("cache_teacher",)))

    def values(self) -> dict[str, Any]:
        """Every setting by its flat name (without ``method``), as :meth:`from_values` takes them."""
        return {**dataclasses.asdict(self.train), **dataclasses.asdict(self.matching),
                "cache_teacher": self.cache_teacher, **dataclasses.asdict(self.method_settings)}

    def to_dict(self) -> dict[str, Any]:
        """The settings that apply to this method, by flat name, as JSON-friendly data."""
        return json.loads(json.dumps({"method": self.method, **self.values()}))

    @property
    def final_sparsity(self) -> float:
        """Unstructured pruning: the conv-weight sparsity after all steps."""
        if not isinstance(self.method_settings, UnstructuredSettings):
            raise ValidationError(f"final_sparsity applies to unstructured pruning, not to method {self.method!r}")
        return self.method_settings.final_sparsity


# Every profile quantizes alike: ptq trains nothing (its epochs and lr are unused); qat fine-tunes the fake-quant
# copy of a trained teacher briefly at a small rate, the common QAT practice.
_QUANTIZATION_PROFILE = {"ptq": dict(epochs=1, lr=0.001, batch_size=64, bits=8, calibration_batches=8),
                         "qat": dict(epochs=2, lr=0.001, batch_size=64, bits=8)}


def _profile(method: str, profile: str) -> dict[str, Any]:
    if profile == "quick":
        return {
            # KD: a student half as wide (~4x fewer parameters); 16x smaller lost too much accuracy here.
            "kd": dict(epochs=8, lr=0.05, batch_size=64, weight_decay=5e-4, schedule="cosine", width_divisor=2),
            "structured": dict(epochs=2, lr=0.01, batch_size=64, pruning_ratio=0.6, scheme="uniform"),
            "unstructured": dict(epochs=2, lr=0.01, batch_size=64, amount=0.9, steps=1),
            **_QUANTIZATION_PROFILE,
        }[method]
    if profile == "paper":
        return {
            "kd": dict(RECIPES.get("kd").to_dict(), width_divisor=8),
            "structured": dict(RECIPES.get("finetune-structured").to_dict(), pruning_ratio=0.7, scheme="paper-vgg16"),
            "unstructured": dict(RECIPES.get("finetune-unstructured").to_dict(), amount=0.2, steps=16),
            **_QUANTIZATION_PROFILE,
        }[method]
    if method == "kd":
        raise ValidationError("the imagenet profile has no distillation setting (the supplement runs none); "
                              "use profile 'paper' or 'quick'")
    return {
        "structured": dict(epochs=20, lr=1e-3, batch_size=64, pruning_ratio=0.1, scheme="uniform"),
        "unstructured": dict(epochs=10, lr=1e-3, batch_size=180, amount=0.9, steps=1),
        **_QUANTIZATION_PROFILE,
    }[method]


def default_settings(method: str, profile: str = "quick", **options) -> Settings:
    """The settings of ``method`` in ``profile`` (``"quick"``, ``"paper"``, ``"imagenet"``) with ``options``.

    Examples
    --------
    >>> s = default_settings("unstructured", "paper")
    >>> s.method_settings.amount, s.method_settings.steps, s.train.epochs, s.train.lr, round(s.final_sparsity, 4)
    (0.2, 16, 30, 0.001, 0.9719)
    >>> default_settings("kd", "quick", epochs=2).train.epochs
    2
    """
    check_choice(method, "compression method", COMPRESSION_METHOD_NAMES)
    check_choice(profile, "settings profile", SETTINGS_PROFILE_NAMES)
    return Settings.from_values(method, {**_profile(method, profile), **options})


def resolve_settings(method: str, settings: str | Settings | Mapping[str, Any] | None = None,
                     **options) -> Settings:
    """Turn ``settings`` (a profile name, a :class:`Settings`, a dict of values or None) plus ``options``
    into :class:`Settings` for ``method``."""
    check_choice(method, "compression method", COMPRESSION_METHOD_NAMES)
    if settings is None:
        settings = "quick"
    if isinstance(settings, str):
        return default_settings(method, settings, **options)
    if isinstance(settings, Settings):
        if settings.method != method:
            raise ValidationError(f"settings are for method {settings.method!r}, not {method!r}")
        return Settings.from_values(method, {**settings.values(), **options})
    if isinstance(settings, Mapping):
        values = dict(settings)
        profile = values.pop("profile", "quick")
        return default_settings(method, profile, **{**values, **options})
    raise ValidationError(f"settings must be a profile name, a Settings or a dict, got {type(settings).__name__}")


def _given_regularizer_settings(settings: str | Settings | Mapping[str, Any] | None,
                                options: Mapping[str, Any]) -> dict[str, Any]:
    """The regularizer settings the caller set (not a profile's), those that differ from the defaults."""
    given: dict[str, Any] = {}
    if isinstance(settings, Settings):
        given = dataclasses.asdict(settings.matching)
    elif isinstance(settings, Mapping):
        given = {k: v for k, v in settings.items() if k != "profile"}
    given.update(options)
    defaults = dataclasses.asdict(MatchingSettings())
    return {k: given[k] for k in REGULARIZER_SETTINGS if k in given and given[k] != defaults[k]}


def check_regularizer_settings(regularizer: str, settings: str | Settings | Mapping[str, Any] | None = None,
                               **options) -> None:
    """Refuse regularizer settings (``weight``, ``drop``, ...) given with ``regularizer="none"``.

    The naive baseline trains without a regularizer, so a weight given with it would be recorded
    but never used.  Only what the caller set counts: the values of ``settings`` (a dict, or a
    :class:`Settings` whose field differs from its default) and ``options``, not a profile's.

    Examples
    --------
    >>> check_regularizer_settings("swa", "quick", weight=10)
    >>> check_regularizer_settings("none", "quick", weight=10)
    Traceback (most recent call last):
    ...
    apkit.core.errors.ValidationError: with regularizer 'none' (the naive baseline) the regularizer settings must be \
unset, got weight=10; drop them or choose a regularizer: ewa, swa or sswa
    """
    if regularizer != NAIVE:
        return
    given = _given_regularizer_settings(settings, options)
    if given:
        shown = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise ValidationError(
            f"with regularizer {NAIVE!r} (the naive baseline) the regularizer settings must be unset, got {shown}; "
            f"drop them or choose a regularizer: {', '.join(REGULARIZER_NAMES[:-1])} or {REGULARIZER_NAMES[-1]}"
        )
