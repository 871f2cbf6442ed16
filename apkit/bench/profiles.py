"""Benchmark profiles: every setting of a benchmark run, as plain data.

A profile is a nested dictionary (so that it can be printed, overridden with ``--set a.b=value`` and
stored in ``results.json``).  Each profile function returns a fresh copy.  ``seed`` seeds the data
and the teacher; ``seeds`` are the training seeds of the compressions (each compression x
regularizer cell is trained once per seed: the seed varies the student's initialisation, the data
order and the SSWA draws, never the teacher or the evaluation images); a compression entry's own
``seeds`` replace them for that compression.  Every seed is evaluated
with the ``evaluation.primary`` attribution method (the main tables'), the first seed with all of
``evaluation.attribution_methods``.

* ``smoke``    — the whole grid on tiny synthetic data in about a minute (CI).
* ``default``  — the whole grid on the embedded synthetic data; a laptop CPU finishes it in minutes.
* ``voc``      — the paper's PASCAL VOC 2012 setting (METHOD §9); needs ``--data-root`` and a GPU.
* ``imagenet`` — the supplement's ImageNet setting (one-shot unstructured 60 % / 90 %, structured
  ResNet-34); needs ``--data-root`` and a GPU.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apkit.attribution import ATTRIBUTION_METHODS
from apkit.bench.faithfulness import faithfulness_settings
from apkit.bench.stages import TEACHER, cell_keys, stage_keys
from apkit.compression.settings import REGULARIZER_SETTINGS, check_regularizer_settings, resolve_settings
from apkit.core.errors import ApkitError, CheckpointError, ValidationError, unknown_name
from apkit.core.names import (
    BENCH_PROFILE_NAMES,
    COMPRESSION_METHOD_NAMES,
    NAIVE,
    PAPER_ATTRIBUTION_METHODS,
    PAPER_DROP,
    PAPER_WEIGHTS,
    PROTOCOL_NAMES,
    REGULARIZER_CHOICES,
)
from apkit.core.registry import Registry
from apkit.core.validation import check_choice, check_int, parse_overrides
from apkit.data import DATASETS
from apkit.evaluation.roar import RANDOM, RoarSettings, roar_recipe
from apkit.models import MODELS
from apkit.training import RECIPES, Recipe

__all__ = ["PROFILES", "compression_settings", "resolve_profile", "roar_settings", "teacher_recipe",
           "validate_profile"]

PROFILES: Registry = Registry("bench profile")


def _train(epochs: int, lr: float, **changes: Any) -> dict[str, Any]:
    """A training section: a :class:`~apkit.training.Recipe` as plain data (gamma only where a profile sets it)."""
    return {k: v for k, v in Recipe(epochs, lr, **changes).to_dict().items() if k != "gamma" or k in changes}


def _paper_regularizer_options() -> dict[str, dict[str, float]]:
    # Supplement C.2: weight 100 for EWA, 50 for SWA and SSWA; SSWA drops 30 % of the teacher's channels.
    options: dict[str, dict[str, float]] = {name: {"weight": weight} for name, weight in PAPER_WEIGHTS.items()}
    options["sswa"]["drop"] = PAPER_DROP
    return options


def _faithfulness(images: int | None, steps: int = 10, road_percentages: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8),
                  ) -> dict[str, Any]:
    """A faithfulness section: deletion, insertion and ROAD of the Grad-CAM maps of ``images`` images (None: all)."""
    return {"enabled": True, "method": "gradcam", "metrics": ["deletion", "insertion", "road"], "images": images,
            "steps": steps, "road_percentages": list(road_percentages)}


def _synthetic(train: int, val: int, seg: int, image_size: int, *, teacher_epochs: int | None, kd_epochs: int,
               prune_epochs: int, seeds: list[int], roar: dict, faithfulness: dict) -> dict[str, Any]:
    # The teacher follows the "synthetic" recipe of `apkit train` (teacher_epochs=None keeps its epochs).
    recipe = RECIPES.get("synthetic")
    teacher_train = {**recipe.to_dict(), "epochs": teacher_epochs or recipe.epochs}
    # Compression entries are settings of apkit.compression.compress: a settings profile plus overrides.
    return {
        "data": {"name": "synthetic", "image_size": image_size, "sizes": {"train": train, "val": val, "seg": seg},
                 "mean": None, "std": None},
        "protocol": "voc",
        "teachers": {"teacher": {"model": "vgg_small", "options": {"input_size": image_size}, "checkpoint": None,
                                 "train": teacher_train}},
        "compressions": {
            "kd": {"method": "kd", "profile": "quick", "epochs": kd_epochs},
            "structured": {"method": "structured", "profile": "quick", "epochs": prune_epochs},
            "unstructured": {"method": "unstructured", "profile": "quick", "epochs": prune_epochs},
            # Naive QAT against SWA QAT at ternary (2-bit) weights, 8-bit activations: the bit-width where
            # quantization moves the maps here (cos to the teacher 0.964; at 4 bits 0.999, at 3 bits 0.996).
            # Three seeds fit the budget; docs/reproduction.md gives the same cells over five.
            "qat-2bit": {"method": "qat", "profile": "quick", "bits": 2, "epochs": prune_epochs,
                         "regularizers": [NAIVE, "swa"]},
        },
        "regularizers": list(REGULARIZER_CHOICES),
        "regularizer_options": _paper_regularizer_options(),
        "evaluation": {"attribution_methods": list(PAPER_ATTRIBUTION_METHODS), "primary": "gradcam",
                       "tolerances": [0, 3], "batch_size": 50},
        "roar": roar,
        "faithfulness": faithfulness,
        "figures": {"examples": 6, "method": "gradcam"},
        "seed": 0,
        "seeds": seeds,
        "paper": None,
    }


def smoke() -> dict[str, Any]:
    return _synthetic(
        400, 100, 60, 32, teacher_epochs=3, kd_epochs=1, prune_epochs=1, seeds=[0, 1],
        faithfulness=_faithfulness(20, steps=4, road_percentages=(0.5,)),
        roar={"enabled": True, "fractions": [0.5], "sources": ["teacher", "kd-none", "kd-swa", "random"],
              "classifier": {"model": "vgg_small", "options": {"input_size": 32, "width_divisor": 4}},
              "train": _train(1, 0.05), "train_size": 200, "test_size": 60, "metric": "map_class"},
    )


def default() -> dict[str, Any]:
    profile = _synthetic(
        4000, 400, 300, 48, teacher_epochs=None, kd_epochs=8, prune_epochs=2, seeds=[0, 1, 2],
        # 30 of the 300 evaluation images keep the 51 models' faithfulness stages within the budget.
        faithfulness=_faithfulness(30),
        # Short retraining leaves F1 at a 0.5 threshold near 0 whatever is removed: the threshold-free
        # per-class mAP shows the ROAR ordering at laptop scale (the paper's F1 is in the details).
        # One fraction, where the ordering was clearest (random 49.8 %, the maps 35.0-37.3 %; at k = 0.1
        # 50.7 against 44.3-46.8, at k = 0.9 every source within 33-37): the budget goes to the QAT arm.
        roar={"enabled": True, "fractions": [0.5],
              "sources": ["teacher", "kd-none", "kd-swa", "random"],
              "classifier": {"model": "vgg_small", "options": {"input_size": 48, "width_divisor": 4}},
              "train": _train(10, 0.05, batch_size=32, schedule="cosine"), "train_size": 2000, "test_size": 400,
              "metric": "map_class"},
    )
    # Structured pruning's effect is the smallest of the three (its naive student keeps the most of the
    # teacher's maps), so three seeds leave its intervals wide; its retraining is the cheapest, and two
    # more seeds fit the budget.  More seeds change no mean, only how precisely it is known.
    profile["compressions"]["structured"]["seeds"] = [0, 1, 2, 3, 4]
    return profile


def voc() -> dict[str, Any]:
    return {
        "data": {"name": "voc", "image_size": 227, "sizes": {}, "mean": None, "std": None},
        "protocol": "voc",
        # The paper starts from ImageNet weights, which cannot be fetched here: --set teachers.teacher.checkpoint=PATH
        # uses your own teacher; otherwise it is trained from scratch with the supplement's recipe (C.2).
        "teachers": {"teacher": {"model": "vgg16_bn", "options": {}, "checkpoint": None,
                                 "train": _train(250, 0.1, batch_size=128, weight_decay=5e-4,
                                                 milestones=(100, 150, 200))}},
        "compressions": {
            "kd": {"method": "kd", "profile": "paper"},
            "structured": {"method": "structured", "profile": "paper", "epochs": 60},
            "unstructured": {"method": "unstructured", "profile": "paper"},
        },
        "regularizers": list(REGULARIZER_CHOICES),
        "regularizer_options": _paper_regularizer_options(),
        "evaluation": {"attribution_methods": list(PAPER_ATTRIBUTION_METHODS), "primary": "gradcam", "tolerances": [0],
                       "batch_size": 16},
        "roar": {"enabled": True, "fractions": [0.1, 0.3, 0.5, 0.7, 0.9],
                 "sources": ["teacher", "kd-none", "kd-swa", "random"],
                 "classifier": {"model": "vgg11_bn", "options": {}}, "train": _train(60, 0.01),
                 "train_size": None, "test_size": None, "metric": "f1"},
        "faithfulness": _faithfulness(None),
        "figures": {"examples": 6, "method": "gradcam"},
        "seed": 0,
        "seeds": [0],
        "paper": "voc",
    }


def imagenet() -> dict[str, Any]:
    return {
        "data": {"name": "imagenet-seg", "image_size": 224, "sizes": {}, "mean": None, "std": None},
        "protocol": "imagenet",
        # Training ImageNet teachers is out of scope for a benchmark: pass your checkpoints with
        # --set teachers.teacher.checkpoint=VGG16.pt --set teachers.resnet34.checkpoint=RESNET34.pt
        "teachers": {
            "teacher": {"model": "vgg16_bn", "options": {"input_size": 224}, "checkpoint": None,
                        "train": _train(90, 0.01, batch_size=256, milestones=(30, 60))},
            "resnet34": {"model": "resnet34", "options": {}, "checkpoint": None,
                         "train": _train(90, 0.1, batch_size=256, milestones=(30, 60))},
        },
        "compressions": {
            "unstructured-60": {"method": "unstructured", "profile": "imagenet", "amount": 0.6},
            "unstructured-90": {"method": "unstructured", "profile": "imagenet", "amount": 0.9},
            "structured": {"method": "structured", "profile": "imagenet", "teacher": "resnet34"},
        },
        "regularizers": list(REGULARIZER_CHOICES),
        "regularizer_options": _paper_regularizer_options(),
        "evaluation": {"attribution_methods": ["gradcam"], "primary": "gradcam", "tolerances": [0], "batch_size": 32},
        "roar": {"enabled": False},
        "faithfulness": _faithfulness(None),
        "figures": {"examples": 6, "method": "gradcam"},
        "seed": 0,
        "seeds": [0],
        "paper": "imagenet",
    }


_PROFILE_FUNCTIONS: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "smoke": (smoke, "the whole grid on tiny synthetic data in about a minute (CI)"),
    "default": (default, "the paper's grid on the embedded synthetic data; minutes on a laptop CPU"),
    "voc": (voc, "the paper's PASCAL VOC 2012 setting (needs --data-root; GPU advised)"),
    "imagenet": (imagenet, "the supplement's ImageNet setting (needs --data-root and teachers; GPU)"),
}
for _name in BENCH_PROFILE_NAMES:
    PROFILES.register(_name, _PROFILE_FUNCTIONS[_name][0], help=_PROFILE_FUNCTIONS[_name][1])


def resolve_profile(name: str, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The settings of profile ``name`` with ``overrides`` (``"a.b=value"``, value parsed as JSON) applied.

    An override of an unknown section or setting is refused with the valid ones, close matches
    first.  The values themselves are checked by :func:`validate_profile`.

    Examples
    --------
    >>> p = resolve_profile("smoke", ["teachers.teacher.train.epochs=1", "data.sizes.train=64"])
    >>> p["teachers"]["teacher"]["train"]["epochs"], p["data"]["sizes"]["train"]
    (1, 64)
    """
    settings = copy.deepcopy(PROFILES.get(name)())
    for (*parents, leaf), value in parse_overrides(overrides):
        item = ".".join([*parents, leaf])
        node = settings
        for depth, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                raise _not_a_section(item, part, node, ".".join(parents[:depth]) or f"profile {name!r}")
            node = node[part]
        # Compression entries take any setting of apkit.compression.compress (validate_profile checks them),
        # and a new compression entry may be added.
        if leaf not in node and parents[:1] != ["compressions"]:
            raise ValidationError(f"override {item!r}: {unknown_name(leaf, 'setting', node, choose='known')}")
        node[leaf] = value
    return settings


def _not_a_section(item: str, part: str, node: Mapping[str, Any], where: str) -> ValidationError:
    sections = [k for k, v in node.items() if isinstance(v, dict)]
    if part in node or not sections:
        what = "a value, not a section" if part in node else "not a section"
        return ValidationError(f"override {item!r}: {part!r} is {what} of {where}; it takes no subsections here: "
                               "set it as a whole, e.g. key=VALUE")
    return ValidationError(f"override {item!r}: {unknown_name(part, 'section', sections, choose='sections here')}")


# ------------------------------------------------------------------------------------------- building
# The objects a profile describes, built by the modules that run them: validating a profile is building them.


def teacher_recipe(settings: Mapping[str, Any], key: str) -> Recipe:
    """The training recipe of teacher ``key``."""
    with _at(f"teachers.{key}.train"):
        return Recipe.from_dict(settings["teachers"][key]["train"])


def compression_settings(settings: Mapping[str, Any], key: str, regularizer: str) -> tuple[str, dict[str, Any]]:
    """The method of compression entry ``key`` and the settings it passes to
    :func:`apkit.compression.compress` with ``regularizer``: the entry's own, then that regularizer's options."""
    spec = dict(settings["compressions"][key])
    method = spec.pop("method")
    for grid_key in ("teacher", "seeds", "regularizers"):  # the grid's, not compress's
        spec.pop(grid_key, None)
    return method, {**spec, **settings["regularizer_options"].get(regularizer, {})}


def roar_settings(settings: Mapping[str, Any]) -> tuple[RoarSettings, Recipe]:
    """What the ROAR section measures, and the retrained classifiers' recipe."""
    roar = settings["roar"]
    with _at("roar"):
        measured = RoarSettings(fractions=roar["fractions"], classifier=roar["classifier"]["model"],
                                classifier_options=roar["classifier"].get("options", {}), metric=roar.get("metric"),
                                train_size=roar.get("train_size"), test_size=roar.get("test_size"))
    with _at("roar.train"):
        return measured, roar_recipe(roar["train"])


# ------------------------------------------------------------------------------------------- validation
# What every profile holds; a profile is a plain dict, so a caller may build one by hand.
_SECTIONS = ("data", "protocol", "teachers", "compressions", "regularizers", "regularizer_options", "evaluation",
             "roar", "faithfulness", "figures", "seed", "seeds")
# The datasets a benchmark can train on: "folder" holds evaluation images only (split seg).
_BENCH_DATASETS = ("synthetic", "voc", "imagenet-seg")
_SPLITS = ("train", "val", "seg")
_FAITHFULNESS_KEYS = ("enabled", "method", "metrics", "images", "steps", "road_percentages")
_ROAR_KEYS = ("enabled", "fractions", "sources", "classifier", "train", "train_size", "test_size", "metric")


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Say which setting of the profile an error is about (the error keeps its class)."""
    try:
        yield
    except ApkitError as exc:
        raise type(exc)(f"bench setting {where}: {exc}") from exc


def _check_keys(mapping: object, where: str, known: Iterable[str], required: Iterable[str] = ()) -> dict:
    """Check ``mapping`` is a dict of known keys holding the required ones; return it."""
    if not isinstance(mapping, Mapping):
        raise ValidationError(f"bench setting {where} must be a mapping, got {type(mapping).__name__}")
    known = list(known)
    for key in mapping:
        if key not in known:
            raise ValidationError(f"bench setting {where}: {unknown_name(key, 'setting', known, choose='known')}")
    missing = [key for key in required if key not in mapping]
    if missing:
        raise ValidationError(f"bench setting {where} lacks {', '.join(missing)}; start from a profile "
                              "(resolve_profile) and override what you change")
    return dict(mapping)


def _check_list(value: object, where: str, *, distinct: bool = True) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValidationError(f"bench setting {where} must be a non-empty list, got {value!r}")
    if distinct and len(set(map(json.dumps, value))) != len(value):
        raise ValidationError(f"bench setting {where} must not repeat an item, got {list(value)!r}")
    return list(value)


def _check_options(builder: Callable, options: object, where: str) -> None:
    """Architecture options must be keyword arguments the model's builder takes."""
    if not isinstance(options, Mapping):
        raise ValidationError(f"bench setting {where} must be a mapping of model options, got {options!r}")
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    takes = [name for name in parameters if name != "num_classes"]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        hint = unknown_name(unknown[0], "option", takes, choose="it takes") if takes else "it takes no options"
        raise ValidationError(f"bench setting {where}: the model does not take {', '.join(unknown)}; {hint}")


def _check_data(settings: Mapping[str, Any]) -> None:
    data = _check_keys(settings["data"], "data", ("name", "image_size", "sizes", "mean", "std"), ("name", "image_size"))
    with _at("data.name"):
        check_choice(data["name"], "bench dataset", _BENCH_DATASETS)
    with _at("data.image_size"):
        check_int(data["image_size"], "image_size", minimum=1)
    for name in ("mean", "std"):
        if data.get(name) is not None:
            _check_normalisation(data, name)
    for split, size in _check_keys(data.get("sizes", {}), "data.sizes", _SPLITS).items():
        with _at(f"data.sizes.{split}"):
            check_int(size, f"the number of {split} images", minimum=1)
    with _at("protocol"):
        check_choice(settings["protocol"], "protocol", PROTOCOL_NAMES)


def _check_normalisation(data: Mapping[str, Any], name: str) -> None:
    """``data.mean`` / ``data.std``: three finite numbers (a positive std), for data read from files only."""
    if data["name"] == "synthetic":
        raise ValidationError(f"bench setting data.{name} applies only to data read from files (voc, imagenet): "
                              "the synthetic data has its own normalisation; drop it")
    value = data[name]
    numbers = not isinstance(value, (str, bytes)) and isinstance(value, Sequence) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not numbers or (name == "std" and min(value) <= 0):
        raise ValidationError(f"bench setting data.{name} must be three finite numbers (red, green, blue)"
                              f"{', each above 0' if name == 'std' else ''}, got {value!r}")


def _check_seeds(settings: Mapping[str, Any]) -> None:
    with _at("seed"):
        check_int(settings["seed"], "seed", minimum=0)
    _check_seed_list(settings["seeds"], "seeds")


def _check_seed_list(seeds: object, where: str) -> None:
    for seed in _check_list(seeds, where):
        with _at(where):
            check_int(seed, "each training seed", minimum=0)


def _check_teachers(settings: Mapping[str, Any]) -> None:
    teachers = settings["teachers"]
    if not isinstance(teachers, Mapping) or not teachers:
        raise ValidationError(f"bench setting teachers must name at least one teacher, got {teachers!r}")
    for key, spec in teachers.items():
        where = f"teachers.{key}"
        spec = _check_keys(spec, where, ("model", "options", "checkpoint", "train"), ("model", "train"))
        checkpoint = spec.get("checkpoint")
        if checkpoint is not None and not Path(str(checkpoint)).is_file():
            raise CheckpointError(f"bench setting {where}.checkpoint: {str(checkpoint)!r} does not exist; check "
                                  "the path, or set it to null to train the teacher")
        with _at(f"{where}.model"):
            builder = MODELS.get(check_choice(spec["model"], "model", MODELS.names()))
        _check_options(builder, spec.get("options", {}), f"{where}.options")
        teacher_recipe(settings, key)


def _check_regularizer_names(value: object, where: str) -> list[str]:
    regularizers = _check_list(value, where)
    for name in regularizers:
        with _at(where):
            check_choice(name, "regularizer", REGULARIZER_CHOICES)
    return regularizers


def _check_regularizers(settings: Mapping[str, Any]) -> list[str]:
    regularizers = _check_regularizer_names(settings["regularizers"], "regularizers")
    options = _check_keys(settings["regularizer_options"], "regularizer_options", REGULARIZER_CHOICES)
    for name, values in options.items():
        if not isinstance(values, Mapping):  # the values are checked with each compression's settings
            raise ValidationError(f"bench setting regularizer_options.{name} must be a mapping of settings such as "
                                  f"{{\"weight\": 50}}, got {values!r}")
    return regularizers


def _check_compression(settings: Mapping[str, Any], key: str, regularizers: list[str]) -> None:
    """One compression entry, with every regularizer's options: the settings compress would build."""
    spec = settings["compressions"][key]
    where = f"compressions.{key}"
    if not isinstance(spec, Mapping) or "method" not in spec:
        raise ValidationError(f"bench setting {where} must be a mapping with a method (kd, structured or "
                              f"unstructured), got {spec!r}")
    with _at(f"{where}.method"):
        check_choice(spec["method"], "compression method", COMPRESSION_METHOD_NAMES)
    with _at(f"{where}.teacher"):
        check_choice(spec.get("teacher", TEACHER), "teacher", settings["teachers"])
    if "seeds" in spec:
        _check_seed_list(spec["seeds"], f"{where}.seeds")
    if "regularizers" in spec:
        regularizers = _check_regularizer_names(spec["regularizers"], f"{where}.regularizers")
    misplaced = sorted(set(spec) & set(REGULARIZER_SETTINGS))
    if misplaced and NAIVE in regularizers:
        raise ValidationError(
            f"bench setting {where}.{misplaced[0]} is a regularizer setting, which the naive baseline (regularizer "
            f"{NAIVE!r}) refuses; set it per regularizer, e.g. --set regularizer_options.swa.{misplaced[0]}=VALUE"
        )
    for regularizer in regularizers:
        method, values = compression_settings(settings, key, regularizer)
        options = settings["regularizer_options"].get(regularizer, {})
        with _at(where + (f" with regularizer_options.{regularizer}" if options else "")):
            resolve_settings(method, values)  # the settings compress will build: building them is the check
            check_regularizer_settings(regularizer, values)


def _check_evaluation(settings: Mapping[str, Any]) -> None:
    evaluation = _check_keys(settings["evaluation"], "evaluation",
                             ("attribution_methods", "primary", "tolerances", "batch_size"),
                             ("attribution_methods", "primary", "tolerances", "batch_size"))
    methods = _check_list(evaluation["attribution_methods"], "evaluation.attribution_methods")
    for method in methods:
        with _at("evaluation.attribution_methods"):
            check_choice(method, "attribution method", ATTRIBUTION_METHODS.names())
    if evaluation["primary"] not in methods:
        raise ValidationError(f"bench setting evaluation.primary must be one of evaluation.attribution_methods "
                              f"{methods}, got {evaluation['primary']!r}; add it there or choose one of them")
    for tolerance in _check_list(evaluation["tolerances"], "evaluation.tolerances"):
        with _at("evaluation.tolerances"):
            check_int(tolerance, "each pointing-game tolerance", minimum=0)
    with _at("evaluation.batch_size"):
        check_int(evaluation["batch_size"], "batch_size", minimum=1)
    figures = _check_keys(settings["figures"], "figures", ("examples", "method"), ("examples", "method"))
    with _at("figures.examples"):
        check_int(figures["examples"], "examples", minimum=1)
    with _at("figures.method"):
        check_choice(figures["method"], "attribution method", ATTRIBUTION_METHODS.names())


def _roar_sources(settings: Mapping[str, Any]) -> list[str]:
    """What ROAR may take its maps from: random maps, a teacher, a cell (its first seed) or one model."""
    cells = [f"{c}-{r}" for c, r in cell_keys(settings)]
    return [RANDOM, *settings["teachers"], *cells, *stage_keys(settings)]


def _enabled_section(settings: Mapping[str, Any], name: str, known: Sequence[str]) -> dict | None:
    """A section with an ``enabled`` switch: the section when it is on, ``None`` when off."""
    section = _check_keys(settings[name], name, known, ("enabled",))
    if not isinstance(section["enabled"], bool):
        raise ValidationError(f"bench setting {name}.enabled must be true or false, got {section['enabled']!r}")
    return section if section["enabled"] else None


def _check_roar(settings: Mapping[str, Any]) -> None:
    roar = _enabled_section(settings, "roar", _ROAR_KEYS)
    if roar is None:
        return
    _check_keys(roar, "roar", _ROAR_KEYS, ("fractions", "sources", "classifier", "train"))
    _check_list(roar["fractions"], "roar.fractions")
    for source in _check_list(roar["sources"], "roar.sources"):
        with _at("roar.sources"):
            check_choice(source, "ROAR source", _roar_sources(settings))
    classifier = _check_keys(roar["classifier"], "roar.classifier", ("model", "options"), ("model",))
    with _at("roar.classifier.model"):
        builder = MODELS.get(check_choice(classifier["model"], "model", MODELS.names()))
    _check_options(builder, classifier.get("options", {}), "roar.classifier.options")
    measured, _ = roar_settings(settings)
    task = getattr(DATASETS.get(settings["data"]["name"]), "task", "multilabel")
    with _at("roar.metric"):
        measured.metric_for(task)


def _check_faithfulness(settings: Mapping[str, Any]) -> None:
    spec = _enabled_section(settings, "faithfulness", _FAITHFULNESS_KEYS)
    if spec is None:
        return
    _check_keys(spec, "faithfulness", _FAITHFULNESS_KEYS, _FAITHFULNESS_KEYS)
    with _at("faithfulness.method"):
        check_choice(spec["method"], "attribution method", settings["evaluation"]["attribution_methods"])
    _check_list(spec["metrics"], "faithfulness.metrics")
    if spec["images"] is not None:
        with _at("faithfulness.images"):
            check_int(spec["images"], "images", minimum=1)
    with _at("faithfulness"):
        faithfulness_settings(settings)  # the settings the stages will build: building them is the check


def validate_profile(settings: Mapping[str, Any]) -> None:
    """Check every setting of a resolved profile before a benchmark runs or writes anything.

    Validating a profile means building what it describes, as the stages will: the teachers'
    :class:`~apkit.training.Recipe`, every compression's :class:`~apkit.compression.Settings` with
    every regularizer's options (:func:`apkit.compression.resolve_settings`), the ROAR settings
    and recipe; and checking the data, the regularizers, the attribution methods, tolerances,
    seeds and figures.

    Raises
    ------
    apkit.core.errors.ApkitError
        The first bad setting, named by its path in the profile (``compressions.structured``).

    Examples
    --------
    >>> validate_profile(resolve_profile("smoke"))
    >>> validate_profile(resolve_profile("smoke", ["compressions.structured.pruning_ratio=1.5"]))
    Traceback (most recent call last):
    ...
    apkit.core.errors.ValidationError: bench setting compressions.structured: pruning_ratio must be < 1.0, got 1.5
    """
    missing = [name for name in _SECTIONS if name not in settings]
    if missing:
        raise ValidationError(f"bench settings lack {', '.join(missing)}; start from a profile (resolve_profile) "
                              "and override what you change")
    _check_data(settings)
    _check_seeds(settings)
    _check_teachers(settings)
    regularizers = _check_regularizers(settings)
    compressions = settings["compressions"]
    if not isinstance(compressions, Mapping) or not compressions:
        raise ValidationError(f"bench setting compressions must name at least one compression, got {compressions!r}")
    for key in compressions:
        _check_compression(settings, key, regularizers)
    _check_evaluation(settings)
    _check_roar(settings)
    _check_faithfulness(settings)
    if settings.get("paper") is not None:  # any other value would promise published numbers and show none
        check_choice(settings["paper"], "bench setting paper (the published numbers shown)", ("voc", "imagenet"))
