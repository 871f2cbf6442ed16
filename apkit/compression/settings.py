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
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apkit.compression.structured import IMPORTANCES, SCHEMES
from apkit.compression.unstructured import iterative_sparsity
from apkit.core.errors import ValidationError
from apkit.core.names import COMPRESSION_METHOD_NAMES, NAIVE, REGULARIZER_NAMES, SETTINGS_PROFILE_NAMES
from apkit.core.validation import check_choice, check_float, check_fraction, check_int
from apkit.models import MODELS
from apkit.training import RECIPES
from apkit.training.loop import check_train_settings

__all__ = ["REGULARIZER_SETTINGS", "Settings", "check_regularizer_settings", "default_settings", "resolve_settings"]

_TRAIN_FIELDS = ("epochs", "lr", "batch_size", "momentum", "weight_decay", "milestones", "gamma", "schedule")
_REGULARIZER_FIELDS = ("weight", "scale_weight", "drop", "teacher_layer", "student_layer", "resize")
#: The settings of the attribution-matching regularizer (refused with regularizer "none").
REGULARIZER_SETTINGS = _REGULARIZER_FIELDS
_RUN_FIELDS = ("cache_teacher",)
_METHOD_FIELDS = {
    "kd": ("student", "student_options", "width_divisor", "temperature", "alpha"),
    "structured": ("pruning_ratio", "scheme", "pruning_ratio_dict", "ignored_layers", "importance",
                   "global_pruning", "round_to"),
    "unstructured": ("amount", "steps"),
}


@dataclass(frozen=True)
class Settings:
    """Every setting of one compression run; a field not used by ``method`` keeps its default.

    Training (:func:`apkit.training.fit`): ``epochs`` (per step for iterative pruning), ``lr``,
    ``batch_size``, ``momentum``, ``weight_decay``, ``milestones``, ``gamma``, ``schedule``.

    Regularizer (ignored with ``regularizer="none"``): ``weight`` (on the paper's scale, for a 7x7
    map; None: 100 for EWA, 50 for SWA and SSWA), ``scale_weight`` (True: multiply the weight by
    ``h * w / 49`` for an ``h x w`` matching map; see
    :class:`apkit.regularizers.AttributionMatchingLoss`), ``drop`` (SSWA; None: 0.3),
    ``teacher_layer`` / ``student_layer`` (None: each model's ``matching_layer``), ``resize``.

    Teacher: ``cache_teacher`` computes the teacher's logits and matching evidence once per
    training image when the training set is ``deterministic`` (no random augmentation), instead
    of once per image and epoch; the training is the same.

    Distillation: ``student`` (registered architecture; None: the teacher's), ``student_options``,
    ``width_divisor``, ``temperature``, ``alpha``.

    Structured pruning: ``pruning_ratio`` (fraction of filters removed per layer),
    ``scheme`` (``"uniform"``: every conv; ``"paper-vgg16"``: conv1 and conv8-13 of VGG16),
    ``pruning_ratio_dict`` (``{layer name: ratio}``, overrides the scheme per layer),
    ``ignored_layers``, ``importance`` (``"l1"`` or ``"group_l1"``), ``global_pruning``, ``round_to``.

    Unstructured pruning: ``amount`` (fraction of the remaining conv weights removed per step) and
    ``steps``; the final sparsity is ``1 - (1 - amount) ** steps`` (one step = one-shot).
    """

    method: str
    epochs: int
    lr: float
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    schedule: str = "step"
    weight: float | None = None
    drop: float | None = None
    teacher_layer: str | None = None
    student_layer: str | None = None
    resize: bool = False
    scale_weight: bool = True
    cache_teacher: bool = True
    student: str | None = None
    student_options: Mapping[str, Any] = field(default_factory=dict)
    width_divisor: int | None = 8
    temperature: float = 4.0
    alpha: float = 0.9
    pruning_ratio: float = 0.7
    scheme: str = "uniform"
    pruning_ratio_dict: Mapping[str, float] = field(default_factory=dict)
    ignored_layers: tuple[str, ...] = ()
    importance: str = "l1"
    global_pruning: bool = False
    round_to: int | None = None
    amount: float = 0.2
    steps: int = 1

    def fields_for(self) -> tuple[str, ...]:
        """Names of the settings that apply to this method."""
        return ("method", *_TRAIN_FIELDS, *_REGULARIZER_FIELDS, *_RUN_FIELDS, *_METHOD_FIELDS[self.method])

    def to_dict(self) -> dict[str, Any]:
        """The settings that apply to this method, as JSON-friendly data."""
        data = dataclasses.asdict(self)
        out = {k: data[k] for k in self.fields_for()}
        return json.loads(json.dumps(out))

    @property
    def final_sparsity(self) -> float:
        """Unstructured pruning: the conv-weight sparsity after all steps."""
        return iterative_sparsity(self.steps, self.amount)


def _recipe(name: str) -> dict[str, Any]:
    return RECIPES.get(name).kwargs()


def _profile(method: str, profile: str) -> dict[str, Any]:
    if profile == "quick":
        return {
            # KD: a student half as wide (~4x fewer parameters); 16x smaller lost too much accuracy here.
            "kd": dict(epochs=8, lr=0.05, batch_size=64, weight_decay=5e-4, schedule="cosine", width_divisor=2),
            "structured": dict(epochs=2, lr=0.01, batch_size=64, pruning_ratio=0.6, scheme="uniform"),
            "unstructured": dict(epochs=2, lr=0.01, batch_size=64, amount=0.9, steps=1),
        }[method]
    if profile == "paper":
        return {
            "kd": dict(_recipe("kd"), width_divisor=8),
            "structured": dict(_recipe("finetune-structured"), pruning_ratio=0.7, scheme="paper-vgg16"),
            "unstructured": dict(_recipe("finetune-unstructured"), amount=0.2, steps=16),
        }[method]
    if method == "kd":
        raise ValidationError("the imagenet profile has no distillation setting (the supplement runs none); "
                              "use profile 'paper' or 'quick'")
    return {
        "structured": dict(epochs=20, lr=1e-3, batch_size=64, pruning_ratio=0.1, scheme="uniform"),
        "unstructured": dict(epochs=10, lr=1e-3, batch_size=180, amount=0.9, steps=1),
    }[method]


def default_settings(method: str, profile: str = "quick", **options) -> Settings:
    """The settings of ``method`` in ``profile`` (``"quick"``, ``"paper"``, ``"imagenet"``) with ``options``.

    Examples
    --------
    >>> s = default_settings("unstructured", "paper")
    >>> s.amount, s.steps, s.epochs, s.lr, round(s.final_sparsity, 4)
    (0.2, 16, 30, 0.001, 0.9719)
    >>> default_settings("kd", "quick", epochs=2).epochs
    2
    """
    check_choice(method, "compression method", COMPRESSION_METHOD_NAMES)
    check_choice(profile, "settings profile", SETTINGS_PROFILE_NAMES)
    base = _profile(method, profile)
    base.update(options)
    return _build(method, base)


def _build(method: str, values: Mapping[str, Any]) -> Settings:
    values = dict(values)
    allowed = set(Settings(method=method, epochs=1, lr=0.1).fields_for()) - {"method"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        close = [m for name in unknown for m in difflib.get_close_matches(name, allowed, n=2, cutoff=0.6)]
        hint = f"did you mean {', '.join(dict.fromkeys(close))}? " if close else ""
        known = [*dict.fromkeys(close), *sorted(allowed - set(close))]
        raise ValidationError(
            f"setting(s) {', '.join(unknown)} do not apply to method {method!r}; {hint}known: {', '.join(known)}"
        )
    values = dict(values)
    for key in ("milestones", "ignored_layers"):
        if key in values:
            if isinstance(values[key], str):
                raise ValidationError(f"{key} must be a list, got the string {values[key]!r}")
            values[key] = tuple(values[key])
    for key in ("student_options", "pruning_ratio_dict"):
        if key in values:
            if values[key] is None:
                values[key] = {}
            if not isinstance(values[key], Mapping):
                raise ValidationError(f"{key} must be a mapping, got {type(values[key]).__name__}")
            values[key] = dict(values[key])
    if "epochs" not in values or "lr" not in values:
        raise ValidationError("settings need at least 'epochs' and 'lr'")
    settings = Settings(method=method, **values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    # The training settings are checked as fit checks them, before a teacher is copied or a layer pruned.
    check_train_settings(**{name: getattr(s, name) for name in _TRAIN_FIELDS})
    if s.weight is not None:
        check_float(s.weight, "weight", minimum=0.0)
    if s.drop is not None:
        check_fraction(s.drop, "drop")
    if s.method == "kd":
        if s.student is not None:
            MODELS.get(s.student)
        check_float(s.temperature, "temperature", minimum=0.0, exclusive_minimum=True)
        check_fraction(s.alpha, "alpha", allow_one=True)
        if s.width_divisor is not None:
            check_int(s.width_divisor, "width_divisor", minimum=1)
    elif s.method == "structured":
        check_fraction(s.pruning_ratio, "pruning_ratio")
        check_choice(s.scheme, "structured pruning scheme", SCHEMES)
        check_choice(s.importance, "importance", IMPORTANCES)
        for name, ratio in s.pruning_ratio_dict.items():
            check_fraction(ratio, f"pruning ratio of {name!r}")
    else:
        check_fraction(s.amount, "amount")
        check_int(s.steps, "steps", minimum=1)


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
        values = {k: getattr(settings, k) for k in settings.fields_for() if k != "method"}
        values.update(options)
        return _build(method, values)
    if isinstance(settings, Mapping):
        values = dict(settings)
        profile = values.pop("profile", "quick")
        values.update(options)
        return default_settings(method, profile, **values)
    raise ValidationError(f"settings must be a profile name, a Settings or a dict, got {type(settings).__name__}")


def _given_regularizer_settings(settings: str | Settings | Mapping[str, Any] | None,
                                options: Mapping[str, Any]) -> dict[str, Any]:
    """The regularizer settings the caller set (not a profile's), those that differ from the defaults."""
    given: dict[str, Any] = {}
    if isinstance(settings, Settings):
        given = {name: getattr(settings, name) for name in _REGULARIZER_FIELDS}
    elif isinstance(settings, Mapping):
        given = {k: v for k, v in settings.items() if k != "profile"}
    given.update(options)
    if "reg_weight" in given:  # the old spelling, kept for one release
        given.setdefault("weight", given.pop("reg_weight"))
    defaults = {f.name: f.default for f in dataclasses.fields(Settings) if f.name in _REGULARIZER_FIELDS}
    return {k: given[k] for k in _REGULARIZER_FIELDS if k in given and given[k] != defaults[k]}


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
