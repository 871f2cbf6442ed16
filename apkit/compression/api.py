"""``compress(...)``: one entry point for distillation, structured and unstructured pruning.

Each method runs with or without an attribution-matching regularizer (``reg="none"`` is the
paper's "Naive" baseline, ``"ewa"``, ``"swa"``, ``"sswa"`` its regularized variants), trains through
:func:`apkit.training.fit` (resumable checkpoints, progress bars, DDP under ``torchrun``), and
returns the compressed model with a record of what it cost and what it scores.  The teacher is
never modified: everything works on copies.

Settings come from a named profile and keyword overrides:

* ``"quick"`` - the embedded synthetic data on a laptop CPU (vgg_small teacher, 64x64 images):
  KD into vgg_small/2 for 8 epochs; structured pruning of 60 % of every conv's filters + 2
  epochs; unstructured pruning of 90 % of the conv weights in one shot + 2 epochs.  The same for
  all four regularizer variants.
* ``"paper"`` - PASCAL VOC 2012 (METHOD §5 and §9): KD into VGG16-BN/8, 350 epochs; structured
  rho = 0.7 on conv1 and conv8-13, 60 epochs at lr 1e-3; unstructured 16 steps of 20 % with 30
  epochs each at lr 1e-3.
* ``"imagenet"`` - the supplement's ImageNet protocol: one-shot unstructured pruning (set
  ``amount=0.6`` or ``0.9``) with 10 epochs at batch 180; structured pruning of 10 % of the
  channels (ResNet-34) with 20 epochs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from tqdm.auto import tqdm

import apkit
from apkit._io import atomic_write_json, read_json
from apkit._validation import check_choice, check_float, check_fraction, check_int, resolve_device
from apkit.compression.distill import DistillationLoss
from apkit.compression.objective import CompressionObjective
from apkit.compression.structured import IMPORTANCES, SCHEMES, paper_vgg16_ratios, prune_structured, vgg_config
from apkit.compression.students import make_student
from apkit.compression.unstructured import (
    attach_masks,
    bake_masks,
    clone_model,
    iterative_sparsity,
    magnitude_prune,
    sparsity_report,
)
from apkit.errors import CheckpointError, ValidationError
from apkit.models import atomic_save, count_parameters, safe_load, save_checkpoint
from apkit.registry import Registry
from apkit.regularizers import KINDS, AttributionMatchingLoss
from apkit.training import CHECKPOINT_NAME, RECIPES, evaluate, fit, is_main_process, seed_everything

METHODS = ("kd", "structured", "unstructured")
REGS = ("none", *KINDS)
PROFILES = ("quick", "paper", "imagenet")
MODEL_FILE = "model.pt"
RECORD_FILE = "record.json"
PROGRESS_FILE = "unstructured_progress.pt"

COMPRESSIONS: Registry = Registry("compression")

_TRAIN_FIELDS = ("epochs", "lr", "batch_size", "momentum", "weight_decay", "milestones", "gamma", "schedule")
_REG_FIELDS = ("reg_weight", "drop", "teacher_layer", "student_layer", "resize")
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

    Regularizer (ignored with ``reg="none"``): ``reg_weight`` (None: 100 for EWA, 50 for SWA and
    SSWA), ``drop`` (SSWA; None: 0.3), ``teacher_layer`` / ``student_layer`` (None: each model's
    ``matching_layer``), ``resize``.

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
    reg_weight: float | None = None
    drop: float | None = None
    teacher_layer: str | None = None
    student_layer: str | None = None
    resize: bool = False
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
        return ("method", *_TRAIN_FIELDS, *_REG_FIELDS, *_METHOD_FIELDS[self.method])

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
    check_choice(method, "compression method", METHODS)
    check_choice(profile, "settings profile", PROFILES)
    base = _profile(method, profile)
    base.update(options)
    return _build(method, base)


def _build(method: str, values: Mapping[str, Any]) -> Settings:
    allowed = set(Settings(method=method, epochs=1, lr=0.1).fields_for()) - {"method"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValidationError(
            f"setting(s) {', '.join(unknown)} do not apply to method {method!r}; "
            f"known: {', '.join(sorted(allowed))}"
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
    check_int(s.epochs, "epochs", minimum=1)
    check_float(s.lr, "lr", minimum=0.0, exclusive_minimum=True)
    check_int(s.batch_size, "batch_size", minimum=1)
    if s.reg_weight is not None:
        check_float(s.reg_weight, "reg_weight", minimum=0.0)
    if s.drop is not None:
        check_fraction(s.drop, "drop")
    if s.method == "kd":
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
    check_choice(method, "compression method", METHODS)
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


# ---------------------------------------------------------------------------------------------- runs


@dataclass
class _Run:
    teacher: nn.Module
    reg: str
    settings: Settings
    train_set: Any
    val_set: Any
    task: str
    device: torch.device
    seed: int
    out: Path | None
    resume: bool
    progress: bool
    example_inputs: torch.Tensor
    student: nn.Module | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def regularizer(self) -> AttributionMatchingLoss | None:
        if self.reg == "none":
            return None
        s = self.settings
        return AttributionMatchingLoss(
            self.reg, teacher_layer=s.teacher_layer, student_layer=s.student_layer, weight=s.reg_weight,
            drop=s.drop if self.reg == "sswa" else None, seed=self.seed, resize=s.resize,
        )

    def fit(self, model: nn.Module, objective, folder: str, *, step: int = 0):
        s = self.settings
        checkpoint_dir = self.out / folder if self.out is not None else None
        on_epoch_end = None
        regularizer = getattr(objective, "regularizer", None)
        if regularizer is not None and regularizer.kind == "sswa":
            # Key the SSWA channel draws to (seed, step, epoch), so a resumed run draws what an
            # uninterrupted one would.
            def draw_seed(epoch: int) -> int:
                return (self.seed * 1_000_003 + step * 10_007 + epoch) % 2**62

            start = 0
            if self.resume and checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_NAME).is_file():
                start = int(safe_load(checkpoint_dir / CHECKPOINT_NAME).get("epoch", 0))
            regularizer.reset_generator(draw_seed(start))

            def on_epoch_end(record: dict) -> None:
                regularizer.reset_generator(draw_seed(int(record["epoch"])))

        began = time.perf_counter()
        result = fit(
            model, self.train_set, val_set=self.val_set, task=self.task, epochs=s.epochs, batch_size=s.batch_size,
            lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, milestones=s.milestones, gamma=s.gamma,
            schedule=s.schedule, objective=objective, device=self.device, seed=self.seed,
            checkpoint_dir=checkpoint_dir, resume=self.resume, progress=self.progress, on_epoch_end=on_epoch_end,
            channels_last=self.device.type == "cpu",  # faster CPU convolutions
        )
        self.timings["finetune_s"] = self.timings.get("finetune_s", 0.0) + time.perf_counter() - began
        return result


def _history(result) -> dict[str, Any]:
    return {"best_epoch": result.best_epoch, "best_metrics": result.best_metrics, "history": result.history}


def _run_kd(run: _Run) -> nn.Module:
    s = run.settings
    if run.student is not None:
        student = copy.deepcopy(run.student)
    else:
        student = make_student(run.teacher, model=s.student, width_divisor=s.width_divisor, **s.student_options)
    student.to(run.device)
    objective = CompressionObjective(
        run.teacher, task=run.task, regularizer=run.regularizer(),
        distillation=DistillationLoss(run.task, temperature=s.temperature, alpha=s.alpha),
    )
    run.extra.update(_history(run.fit(student, objective, "train")))
    return student


def _run_structured(run: _Run) -> nn.Module:
    s = run.settings
    ratios: dict[str, float] = {}
    uniform = s.pruning_ratio
    if s.scheme == "paper-vgg16":
        ratios = paper_vgg16_ratios(run.teacher, s.pruning_ratio)
        uniform = 0.0
    ratios.update(s.pruning_ratio_dict)
    began = time.perf_counter()
    model = prune_structured(
        run.teacher, example_inputs=run.example_inputs, pruning_ratio=uniform, pruning_ratio_dict=ratios,
        ignored_layers=s.ignored_layers, importance=s.importance, global_pruning=s.global_pruning,
        round_to=s.round_to,
    )
    run.timings["prune_s"] = time.perf_counter() - began
    if run.val_set is not None:
        run.extra["val_after_pruning"] = evaluate(model, run.val_set, task=run.task, device=run.device)
    objective = CompressionObjective(run.teacher, task=run.task, regularizer=run.regularizer()) \
        if run.reg != "none" else None
    run.extra.update(_history(run.fit(model, objective, "train")))
    return model


def _run_unstructured(run: _Run) -> nn.Module:
    s = run.settings
    model = clone_model(run.teacher)
    model.train()
    objective = CompressionObjective(run.teacher, task=run.task, regularizer=run.regularizer()) \
        if run.reg != "none" else None
    progress_path = run.out / PROGRESS_FILE if run.out is not None else None
    done, steps = 0, []
    if run.resume and progress_path is not None and progress_path.is_file():
        payload = safe_load(progress_path)
        if payload.get("settings") != run.settings.to_dict() or payload.get("reg") != run.reg:
            raise CheckpointError(
                f"{str(progress_path)!r} belongs to a run with other settings; use another out_dir or resume=False"
            )
        attach_masks(model)
        model.load_state_dict(payload["state_dict"])
        done, steps = int(payload["step"]), list(payload["steps"])
        run.timings.update(payload.get("timings", {}))
    for step in range(done + 1, s.steps + 1):
        target = iterative_sparsity(step, s.amount)
        if run.progress and is_main_process():
            tqdm.write(f"unstructured pruning step {step}/{s.steps}: {target:.4f} of the conv weights")
        began = time.perf_counter()
        magnitude_prune(model, sparsity=target, inplace=True)
        run.timings["prune_s"] = run.timings.get("prune_s", 0.0) + time.perf_counter() - began
        result = run.fit(model, objective, f"step{step:02d}", step=step)
        steps.append({"step": step, "sparsity": target, "best_epoch": result.best_epoch,
                      "best_metrics": result.best_metrics})
        if progress_path is not None and is_main_process():
            atomic_save({"step": step, "steps": steps, "settings": run.settings.to_dict(), "reg": run.reg,
                         "timings": dict(run.timings),
                         "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}},
                        progress_path)
    run.extra["steps"] = steps
    bake_masks(model)
    return model


COMPRESSIONS.register("kd", _run_kd,
                      help="knowledge distillation into a narrower student (sigmoid KD for multi-label data)")
COMPRESSIONS.register("structured", _run_structured,
                      help="L1 filter pruning with Torch-Pruning, one shot, then fine-tuning")
COMPRESSIONS.register("unstructured", _run_unstructured,
                      help="global magnitude pruning of conv weights, iterative or one-shot, with fine-tuning")


def _macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    macs, _ = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs)


def _example_inputs(dataset: Any, device: torch.device) -> torch.Tensor:
    try:
        item = dataset[0]
    except Exception as exc:  # noqa: BLE001 - any failure means the dataset is unusable here
        raise ValidationError(f"train_set[0] failed ({type(exc).__name__}: {exc}); pass a map-style dataset") from exc
    image = item[0] if isinstance(item, (tuple, list)) else None
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValidationError("train_set items must be (image (C, H, W) tensor, label, ...) tuples")
    return image[None].float().to(device)


def _load_finished(out: Path, method: str, reg: str, settings: Settings, seed: int, device: torch.device):
    from apkit.models import load_checkpoint

    record = read_json(out / RECORD_FILE)
    same = (record.get("method") == method and record.get("reg") == reg and record.get("seed") == seed
            and record.get("settings") == settings.to_dict())
    if not same:
        raise CheckpointError(
            f"{str(out)!r} already holds a compression with other settings; use another out_dir or resume=False"
        )
    return load_checkpoint(out / MODEL_FILE, map_location=device), record


def compress(
    teacher: nn.Module,
    method: str = "kd",
    reg: str = "none",
    *,
    train_set: Any,
    val_set: Any = None,
    settings: str | Settings | Mapping[str, Any] | None = "quick",
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    student: nn.Module | None = None,
    **options,
) -> tuple[nn.Module, dict[str, Any]]:
    """Compress ``teacher`` with ``method`` and regularizer ``reg``; return ``(model, record)``.

    Parameters
    ----------
    teacher : torch.nn.Module
        The trained original model (not modified).
    method : {"kd", "structured", "unstructured"}
        Knowledge distillation, L1 filter pruning or global magnitude pruning of conv weights.
    reg : {"none", "ewa", "swa", "sswa"}
        Attribution-matching regularizer added during training ("none": the naive baseline).
    train_set, val_set : Dataset
        Items ``(image, label, ...)``; ``val_set`` picks the best epoch and gives the metrics.
    settings : str, Settings or dict
        A profile (``"quick"``, ``"paper"``, ``"imagenet"``), a :class:`Settings`, or a dict of
        values (with an optional ``"profile"`` key).  See :class:`Settings`.
    out_dir : path, optional
        Where the training checkpoints, ``model.pt`` and ``record.json`` go.
    resume : bool
        Continue an interrupted run in ``out_dir`` (at the right epoch and, for iterative pruning,
        the right step); a finished run is loaded and returned.
    device : str or torch.device, optional
        Default: CUDA when available.
    seed : int
        Seeds the student's initialisation, the data order and the SSWA channel draws.
    progress : bool
        Show progress bars.
    student : torch.nn.Module, optional
        KD only: the student to distil into (a copy is trained) instead of ``settings.student``.
    **options
        Overrides of single settings, e.g. ``epochs=2``, ``pruning_ratio=0.5``.

    Returns
    -------
    model : torch.nn.Module
        The compressed model (pruning masks baked), in eval mode.
    record : dict
        ``params``, ``nonzero_params``, ``macs``, ``sparsity``, ``weight_sparsity`` (conv weights),
        ``compression_ratio``, ``teacher`` (its params and MACs), ``settings``, ``timings``,
        ``val`` (validation metrics of the returned model) and the training history.
    """
    if not isinstance(teacher, nn.Module):
        raise ValidationError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    COMPRESSIONS.get(method)
    check_choice(reg, "regularizer", REGS)
    s = resolve_settings(method, settings, **options)
    if student is not None and method != "kd":
        raise ValidationError("student= applies only to method='kd'")
    check_int(seed, "seed", minimum=0)
    device = resolve_device(device)
    if resume and out_dir is None:
        raise ValidationError("resume=True needs out_dir (the folder of the run to resume)")
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is not None and (out / RECORD_FILE).is_file() and (out / MODEL_FILE).is_file():
        return _load_finished(out, method, reg, s, seed, device)
    task = getattr(train_set, "task", "multilabel")

    began = time.perf_counter()
    frozen = clone_model(teacher).to(device).eval()  # the caller's teacher is never touched
    example = _example_inputs(train_set, device)
    teacher_params = count_parameters(frozen)
    seed_everything(seed)
    run = _Run(frozen, reg, s, train_set, val_set, task, device, seed, out, resume, progress, example, student)
    model = COMPRESSIONS.get(method)(run)
    model.eval()

    report = sparsity_report(model)
    record: dict[str, Any] = {
        "method": method, "reg": reg, "seed": seed, "task": task, "device": str(device),
        "apkit_version": apkit.__version__, "settings": s.to_dict(),
        "architecture": getattr(model, "apkit_config", {}).get("name"),
        "params": report["params"], "nonzero_params": report["nonzero_params"], "macs": _macs(model, example),
        "sparsity": report["sparsity"], "weight_sparsity": report["weight_sparsity"],
        "compression_ratio": teacher_params / max(report["nonzero_params"], 1),
        "teacher": {"params": teacher_params, "macs": _macs(frozen, example)},
    }
    try:
        record["config"] = vgg_config(model)
    except ValidationError:
        record["config"] = None
    record["val"] = evaluate(model, val_set, task=task, device=device) if val_set is not None else {}
    record.update(run.extra)
    run.timings["total_s"] = run.timings.get("total_s", 0.0) + time.perf_counter() - began
    record["timings"] = dict(run.timings)
    if out is not None and is_main_process():
        if hasattr(model, "apkit_config"):
            save_checkpoint(model, out / MODEL_FILE, meta={"compression": {k: record[k] for k in
                                                                           ("method", "reg", "seed", "settings")}})
        else:
            atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model_state.pt")
        atomic_write_json(out / RECORD_FILE, record)
    return model, record

