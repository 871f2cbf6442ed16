"""``compress(...)``: one entry point for distillation, structured and unstructured pruning.

Each method runs with or without an attribution-matching regularizer (``regularizer="none"`` is
the paper's "Naive" baseline, ``"ewa"``, ``"swa"``, ``"sswa"`` its regularized variants), trains
through :func:`apkit.training.fit` (resumable checkpoints, progress bars, DDP under ``torchrun``),
and returns the compressed model with a :class:`CompressionRecord` of what it cost and what it
scores.  The teacher is never modified: everything works on copies.  The settings of a run are a
:class:`apkit.compression.Settings` (see :mod:`apkit.compression.settings`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from tqdm.auto import tqdm

from apkit.compression.distill import DistillationLoss
from apkit.compression.layers import make_twice_differentiable, matching_layers
from apkit.compression.objective import CompressionObjective
from apkit.compression.quantization import check_method_regularizer, run_ptq, run_qat
from apkit.compression.settings import Settings, check_regularizer_settings, resolve_settings
from apkit.compression.structured import paper_vgg16_ratios, prune_structured, vgg_config
from apkit.compression.students import make_student
from apkit.compression.teacher_cache import TeacherCache, can_cache
from apkit.compression.unstructured import (
    attach_masks,
    bake_masks,
    clone_model,
    iterative_sparsity,
    layer_types_of,
    magnitude_prune,
    sparsity_report,
)
from apkit.core.distributed import is_main_process
from apkit.core.errors import CheckpointError, ValidationError
from apkit.core.io import atomic_write_json, check_out_dir, read_json
from apkit.core.names import COMPRESSION_METHOD_NAMES, NAIVE, REGULARIZER_CHOICES
from apkit.core.registry import Registry
from apkit.core.validation import check_choice, check_dataset, check_int, check_module, resolve_device
from apkit.core.version import __version__
from apkit.models import atomic_save, count_parameters, load_checkpoint, safe_load, save_checkpoint
from apkit.models.checkpoint import MODEL_FILE, conform_to_state_dict
from apkit.models.quantized import is_quantized, quantized_twin
from apkit.regularizers import AttributionMatchingLoss
from apkit.training import CHECKPOINT_NAME, evaluate, fit, resolve_task, seed_everything
from apkit.training.state import AFRESH, finished_epochs

__all__ = ["COMPRESSION_METHODS", "MODEL_FILE", "PROGRESS_FILE", "RECORD_FILE", "CompressionRecord", "RunOptions",
           "compress"]

STATE_FILE = "model_state.pt"  # the plain state_dict of a model that apkit did not build
RECORD_FILE = "record.json"
PROGRESS_FILE = "unstructured_progress.pt"

COMPRESSION_METHODS: Registry = Registry("compression method")


@dataclass
class CompressionRecord:
    """What one compression run cost and what its model scores (the content of ``record.json``).

    Attributes
    ----------
    method, regularizer : str
        The compression method and regularizer (``"none"``: the naive baseline).
    seed : int
    task : str
    device : str
    apkit_version : str
    settings : dict
        The :class:`~apkit.compression.Settings` that apply to the method.
    architecture : str or None
        The registered architecture of the model.
    params, nonzero_params, macs : int
        Size and cost of the compressed model (MACs for one input image).
    sparsity, weight_sparsity : float
        Share of zero parameters, and of zero conv weights.
    compression_ratio : float
        Teacher parameters over the model's non-zero parameters.
    teacher : dict
        The teacher's ``params`` and ``macs``.
    config : list or None
        The VGG configuration after compression (channel counts and pools).
    val : dict
        Validation metrics of the returned model.
    timings : dict
        ``prune_s``, ``finetune_s``, ``total_s``.
    best_epoch, best_metrics, history
        The fine-tuning's best epoch, its metrics, and one record per epoch (KD, structured).
    val_after_pruning : dict or None
        Structured pruning: validation metrics right after pruning, before fine-tuning.
    steps : list of dict or None
        Unstructured pruning: per step, its sparsity, best epoch and metrics.
    input : dict
        The input the models were trained on: ``image_size`` (the side of the training images),
        and the data's ``mean`` and ``std`` where it has them.  Audits read it back
        (:func:`apkit.models.recorded_input`).
    layers : dict or None
        With a regularizer: the matching layers (``teacher``, ``student``), their map sizes
        (``teacher_map``, ``student_map``, ``[h, w]`` at ``input.image_size``) and ``warnings``
        (a map smaller than 4x4).
    student : str or None
        KD into a given student: its architecture (a model spec's ``ARCH``, or its class name).
    quantization : dict or None
        Quantization (``ptq``, ``qat``): ``bits``, ``size_bytes`` and ``latency`` (a CPU batch)
        against the float teacher's, and ``twin``, the fake-quant twin's agreement with the int8
        logits.  ``params``, ``macs`` and the sparsities of a quantized model are its float twin's;
        ``val`` is measured on the int8 model.
    """

    method: str
    regularizer: str
    seed: int
    task: str
    device: str
    apkit_version: str
    settings: dict[str, Any]
    architecture: str | None
    params: int
    nonzero_params: int
    macs: int
    sparsity: float
    weight_sparsity: float
    compression_ratio: float
    teacher: dict[str, int]
    config: list | None = None
    val: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    best_metrics: dict[str, float] | None = None
    history: list[dict] | None = None
    val_after_pruning: dict[str, float] | None = None
    steps: list[dict] | None = None
    input: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, Any] | None = None
    student: str | None = None
    quantization: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data; the fields a method does not have are left out."""
        optional = ("best_epoch", "best_metrics", "history", "val_after_pruning", "steps", "layers", "student",
                    "quantization")
        return {k: v for k, v in dataclasses.asdict(self).items() if not (k in optional and v is None)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionRecord:
        """The record that :meth:`to_dict` wrote (e.g. read back from ``record.json``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ---------------------------------------------------------------------------------------------- runs


@dataclass
class _Run:
    teacher: nn.Module
    regularizer_name: str
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

    def regularizer(self, student: nn.Module) -> AttributionMatchingLoss | None:
        if self.regularizer_name == NAIVE:
            return None
        m = self.settings.matching
        if self.regularizer_name in ("swa", "sswa"):
            make_twice_differentiable(student)  # these train through the gradient of the student's logits
        layers = matching_layers(self.teacher, student, self.example_inputs, teacher_layer=m.teacher_layer,
                                 student_layer=m.student_layer)
        self.extra["layers"] = layers
        return AttributionMatchingLoss(
            self.regularizer_name, teacher_layer=layers["teacher"], student_layer=layers["student"], weight=m.weight,
            drop=m.drop if self.regularizer_name == "sswa" else None, seed=self.seed, resize=m.resize,
            scale_weight=m.scale_weight,
        )

    def objective(self, student: nn.Module, *,
                  distillation: DistillationLoss | None = None) -> CompressionObjective | None:
        """Task (or KD) loss plus the regularizer; ``None`` (the task loss of ``fit``) when there is neither."""
        regularizer = self.regularizer(student)
        if regularizer is None and distillation is None:
            return None
        cache = None
        if self.settings.cache_teacher and can_cache(self.train_set):
            began = time.perf_counter()
            cache = TeacherCache.build(self.teacher, self.train_set, regularizer=regularizer, device=self.device,
                                       channels_last=self.device.type == "cpu", progress=self.progress)
            self.timings["teacher_cache_s"] = time.perf_counter() - began
        return CompressionObjective(self.teacher, task=self.task, regularizer=regularizer, distillation=distillation,
                                    cache=cache)

    def fit(self, model: nn.Module, objective, folder: str, *, step: int = 0):
        checkpoint_dir = self.out / folder if self.out is not None else None
        on_epoch_end = None
        regularizer = getattr(objective, "regularizer", None)
        if regularizer is not None and regularizer.regularizer == "sswa":
            # Key the SSWA channel draws to (seed, step, epoch), so a resumed run draws what an
            # uninterrupted one would.
            def draw_seed(epoch: int) -> int:
                return (self.seed * 1_000_003 + step * 10_007 + epoch) % 2**62

            start = 0
            if self.resume and checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_NAME).is_file():
                start = finished_epochs(checkpoint_dir / CHECKPOINT_NAME)
            regularizer.reset_generator(draw_seed(start))

            def on_epoch_end(record: dict) -> None:
                regularizer.reset_generator(draw_seed(int(record["epoch"])))

        began = time.perf_counter()
        result = fit(
            model, self.train_set, self.settings.train, val_set=self.val_set, objective=objective,
            on_epoch_end=on_epoch_end, task=self.task, device=self.device, seed=self.seed,
            checkpoint_dir=checkpoint_dir, resume=self.resume, progress=self.progress,
            channels_last=self.device.type == "cpu",  # faster CPU convolutions
        )
        self.timings["finetune_s"] = self.timings.get("finetune_s", 0.0) + time.perf_counter() - began
        return result


def _history(result) -> dict[str, Any]:
    return {"best_epoch": result.best_epoch, "best_metrics": result.best_metrics, "history": result.history}


def _run_kd(run: _Run) -> nn.Module:
    s = run.settings.method_settings
    if run.student is not None:
        student = copy.deepcopy(run.student)
    else:
        student = make_student(run.teacher, model=s.student, width_divisor=s.width_divisor, **s.student_options)
    student.to(run.device)
    objective = run.objective(student, distillation=DistillationLoss(run.task, temperature=s.temperature,
                                                                      alpha=s.alpha))
    run.extra.update(_history(run.fit(student, objective, "train")))
    return student


def _run_structured(run: _Run) -> nn.Module:
    s = run.settings.method_settings
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
    run.extra.update(_history(run.fit(model, run.objective(model), "train")))
    return model


def _resume_unstructured(run: _Run, model: nn.Module, progress_path: Path | None) -> tuple[int, list]:
    """The steps an interrupted iterative pruning already finished (their weights loaded into ``model``)."""
    if not (run.resume and progress_path is not None and progress_path.is_file()):
        return 0, []
    payload = safe_load(progress_path)
    if payload.get("settings") != run.settings.to_dict() or payload.get("regularizer") != run.regularizer_name:
        raise CheckpointError(
            f"{str(progress_path)!r} belongs to a run with other settings; use the same settings, another out_dir "
            f"(--out), or {AFRESH}"
        )
    attach_masks(model, layer_types_of(run.settings.method_settings.layers))
    model.load_state_dict(payload["state_dict"])
    run.timings.update(payload.get("timings", {}))
    return int(payload["step"]), list(payload["steps"])


def _run_unstructured(run: _Run) -> nn.Module:
    s = run.settings.method_settings
    model = clone_model(run.teacher)
    model.train()
    objective = run.objective(model)
    progress_path = run.out / PROGRESS_FILE if run.out is not None else None
    done, steps = _resume_unstructured(run, model, progress_path)
    for step in range(done + 1, s.steps + 1):
        target = iterative_sparsity(step, s.amount)
        if run.progress and is_main_process():
            tqdm.write(f"unstructured pruning step {step}/{s.steps}: {target:.4f} of the conv weights")
        began = time.perf_counter()
        magnitude_prune(model, sparsity=target, inplace=True, layer_types=layer_types_of(s.layers))
        run.timings["prune_s"] = run.timings.get("prune_s", 0.0) + time.perf_counter() - began
        result = run.fit(model, objective, f"step{step:02d}", step=step)
        steps.append({"step": step, "sparsity": target, "best_epoch": result.best_epoch,
                      "best_metrics": result.best_metrics})
        if progress_path is not None and is_main_process():
            atomic_save({"step": step, "steps": steps, "settings": run.settings.to_dict(),
                         "regularizer": run.regularizer_name, "timings": dict(run.timings),
                         "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}},
                        progress_path)
    run.extra["steps"] = steps
    bake_masks(model)
    return model


_RUNNERS = {"kd": _run_kd, "structured": _run_structured, "unstructured": _run_unstructured, "ptq": run_ptq,
            "qat": run_qat}
_HELP = {
    "kd": "knowledge distillation into a narrower student (sigmoid KD for multi-label data)",
    "structured": "L1 filter pruning with Torch-Pruning, one shot, then fine-tuning",
    "unstructured": "global magnitude pruning of conv weights, iterative or one-shot, with fine-tuning",
    "ptq": "post-training static int8 quantization (8- or 4-bit weights), calibrated on training images",
    "qat": "quantization-aware training (fake quantization, 8- or 4-bit weights), then int8 conversion",
}
for _name in COMPRESSION_METHOD_NAMES:
    COMPRESSION_METHODS.register(_name, _RUNNERS[_name], help=_HELP[_name])


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
        found = type(image).__name__ if isinstance(item, (tuple, list)) else type(item).__name__
        raise ValidationError(f"train_set items must be (image (C, H, W) tensor, label, ...) tuples, got a {found} "
                              "image; give a torchvision dataset a transform that ends in ToTensor() (and Normalize)")
    return image[None].float().to(device)


def _normalisation(dataset: Any) -> dict[str, list[float]]:
    """The ``mean`` and ``std`` of a dataset: its attributes, else its transform's ``Normalize``."""
    if getattr(dataset, "mean", None) is not None and getattr(dataset, "std", None) is not None:
        return {"mean": [float(v) for v in dataset.mean], "std": [float(v) for v in dataset.std]}
    transform = getattr(dataset, "transform", None)
    steps = getattr(transform, "transforms", [transform])
    normalize = next((t for t in steps if type(t).__name__ == "Normalize"), None)
    if normalize is None:
        return {}
    return {"mean": [float(v) for v in normalize.mean], "std": [float(v) for v in normalize.std]}


def input_record(dataset: Any, example_inputs: torch.Tensor) -> dict[str, Any]:
    """What ``record.json`` says of the input: the training images' side and the data's normalisation.

    Examples
    --------
    >>> from apkit.data import SyntheticShapes
    >>> input_record(SyntheticShapes("val", num_samples=1), torch.zeros(1, 3, 48, 48))["image_size"]
    48
    """
    height, width = example_inputs.shape[-2:]
    size: int | list[int] = int(height) if height == width else [int(height), int(width)]
    return {"image_size": size, **_normalisation(dataset)}


def _finished(folder: Path) -> bool:
    """Whether ``folder`` holds a finished compression: its record and its model, in either file."""
    return (folder / RECORD_FILE).is_file() and any((folder / name).is_file() for name in (MODEL_FILE, STATE_FILE))


def check_compression_out_dir(out_dir: str | Path | None, resume: bool, overwrite: bool) -> Path | None:
    """The output folder, checked before any work: writable, and not holding a finished run unless asked."""
    return check_out_dir(out_dir, resume=resume, overwrite=overwrite, finished=_finished,
                         holds=f"a finished compression ({RECORD_FILE} and its model)", reuse="load it",
                         redo="compress afresh over it")


def _load_finished(out: Path, run: _Run, method: str) -> tuple[nn.Module, CompressionRecord]:
    """The model and record of the finished run in ``out``, which must have been made with the same settings."""
    record = CompressionRecord.from_dict(read_json(out / RECORD_FILE))
    same = (record.method == method and record.regularizer == run.regularizer_name and record.seed == run.seed
            and record.settings == run.settings.to_dict())
    if not same:
        raise CheckpointError(
            f"{str(out)!r} already holds a compression with other settings; use another out_dir (--out), or "
            "compress afresh over it: overwrite=True in Python, --overwrite on the command line"
        )
    if (out / MODEL_FILE).is_file():
        return load_checkpoint(out / MODEL_FILE, map_location=run.device), record
    # A model apkit did not build was saved as a plain state dict: rebuild it from its unpruned architecture.
    state = safe_load(out / STATE_FILE)
    model = copy.deepcopy(run.student) if run.student is not None else clone_model(run.teacher)
    conform_to_state_dict(model, state)
    model.load_state_dict(state)
    return model.to(run.device).eval(), record


def _record(run: _Run, model: nn.Module, method: str, teacher_params: int) -> CompressionRecord:
    # An int8 model is counted on its float twin (the same weights, dequantized); it is evaluated itself.
    measured = quantized_twin(model).to(run.device) if is_quantized(model) else model
    report = sparsity_report(measured)
    try:
        config = vgg_config(model)
    except ValidationError:
        config = None
    return CompressionRecord(
        method=method, regularizer=run.regularizer_name, seed=run.seed, task=run.task, device=str(run.device),
        apkit_version=__version__, settings=run.settings.to_dict(),
        architecture=getattr(model, "apkit_config", {}).get("name"),
        params=report["params"], nonzero_params=report["nonzero_params"], macs=_macs(measured, run.example_inputs),
        sparsity=report["sparsity"], weight_sparsity=report["weight_sparsity"],
        compression_ratio=teacher_params / max(report["nonzero_params"], 1),
        teacher={"params": teacher_params, "macs": _macs(run.teacher, run.example_inputs)}, config=config,
        val=evaluate(model, run.val_set, task=run.task, device=run.device) if run.val_set is not None else {},
        input=input_record(run.train_set, run.example_inputs),
        student=None if run.student is None else getattr(run.student, "apkit_architecture", type(run.student).__name__),
        **run.extra,
    )


def _save(out: Path, model: nn.Module, record: CompressionRecord) -> None:
    if hasattr(model, "apkit_config"):
        compression = {"method": record.method, "regularizer": record.regularizer, "seed": record.seed,
                       "settings": record.settings}
        save_checkpoint(model, out / MODEL_FILE, meta={"compression": compression, "input": record.input})
    else:
        atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / STATE_FILE)
    atomic_write_json(out / RECORD_FILE, record.to_dict())


@dataclass(frozen=True)
class RunOptions:
    """How one :func:`compress` run is carried out (its keyword options besides the settings).

    Attributes
    ----------
    out_dir : path, optional
        Where the training checkpoints, ``model.pt`` and ``record.json`` go.
    resume : bool
        Continue an interrupted run in ``out_dir`` (at the right epoch and, for iterative pruning,
        the right step); a finished run is loaded and returned.
    overwrite : bool
        Compress afresh over a finished run in ``out_dir`` (one with ``record.json`` and its
        model), which is refused otherwise: its model would be lost.
    device : str or torch.device, optional
        Default: CUDA when available.
    seed : int
        Seeds the student's initialisation, the data order and the SSWA channel draws.
    progress : bool
        Show progress bars.
    """

    out_dir: str | Path | None = None
    resume: bool = False
    overwrite: bool = False
    device: str | torch.device | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_int(self.seed, "seed", minimum=0)

    @classmethod
    def split(cls, options: Mapping[str, Any]) -> tuple[RunOptions, dict[str, Any]]:
        """``options`` parted into the run's options and the rest (overrides of single settings)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: v for k, v in options.items() if k in names}), \
            {k: v for k, v in options.items() if k not in names}


def compress(
    teacher: nn.Module,
    method: str = "kd",
    regularizer: str = NAIVE,
    *,
    train_set: Any,
    val_set: Any = None,
    settings: str | Settings | Mapping[str, Any] | None = "quick",
    student: nn.Module | None = None,
    **options,
) -> tuple[nn.Module, CompressionRecord]:
    """Compress ``teacher`` with ``method`` and ``regularizer``; return ``(model, record)``.

    Parameters
    ----------
    teacher : torch.nn.Module
        The trained original model (not modified).
    method : {"kd", "structured", "unstructured", "ptq", "qat"}
        Knowledge distillation, L1 filter pruning, global magnitude pruning of conv weights,
        post-training int8 quantization or quantization-aware training (see
        :mod:`apkit.compression.quantization`; ``ptq`` takes no regularizer).
    regularizer : {"none", "ewa", "swa", "sswa"}
        Attribution-matching regularizer added during training ("none": the naive baseline).
    train_set, val_set : Dataset
        Items ``(image, label, ...)``; ``val_set`` picks the best epoch and gives the metrics.  Plain
        torchvision or PyTorch datasets work as they are (``torchvision.datasets.ImageFolder`` with a
        ``ToTensor`` transform): integer labels mean a single-label task.  The size of the training
        images and the data's normalisation (its ``mean``/``std``, or its transform's ``Normalize``)
        are recorded in ``record.input``.
    settings : str, Settings or dict
        A profile (``"quick"``, ``"paper"``, ``"imagenet"``), a :class:`Settings`, or a dict of
        values (with an optional ``"profile"`` key).  See :class:`Settings`.
    student : torch.nn.Module, optional
        KD only: the student to distil into (a copy is trained), of any architecture, instead of
        ``settings.student``.
    **options
        The run's options ``out_dir``, ``resume``, ``overwrite``, ``device``, ``seed``,
        ``progress`` (see :class:`RunOptions`), and overrides of single settings, e.g.
        ``epochs=2``, ``pruning_ratio=0.5``, ``weight=10``, ``optimizer="adamw"``,
        ``teacher_layer="layer3"`` (the matching layer; default: the audit's default layer at the
        training images' size, see :func:`apkit.compression.layers.matching_layers`).

    Returns
    -------
    model : torch.nn.Module
        The compressed model (pruning masks baked), in eval mode.
    record : CompressionRecord
        Parameters, non-zero parameters, MACs, sparsity, compression ratio, the teacher's size,
        settings, timings, validation metrics and the training history.
    """
    check_module(teacher, "teacher")
    runner = COMPRESSION_METHODS.get(method)
    check_choice(regularizer, "regularizer", REGULARIZER_CHOICES)
    options, overrides = RunOptions.split(options)
    s = resolve_settings(method, settings, **overrides)
    check_regularizer_settings(regularizer, settings, **overrides)
    check_method_regularizer(method, regularizer)
    if student is not None and method != "kd":
        raise ValidationError("student= applies only to method='kd'")
    check_dataset(train_set, "train_set")
    task = resolve_task(None, train_set)
    device = resolve_device(options.device)
    out = check_compression_out_dir(options.out_dir, options.resume, options.overwrite)
    began = time.perf_counter()
    frozen = clone_model(teacher).to(device).eval()  # the caller's teacher is never touched
    teacher_params = count_parameters(frozen)
    seed_everything(options.seed)
    run = _Run(frozen, regularizer, s, train_set, val_set, task, device, options.seed, out, options.resume,
               options.progress, _example_inputs(train_set, device), student)
    if options.resume and out is not None and _finished(out):
        return _load_finished(out, run, method)
    return _compress(run, runner, method=method, began=began, teacher_params=teacher_params)


def _compress(run: _Run, runner: Callable[[_Run], nn.Module], *, method: str, began: float,
              teacher_params: int) -> tuple[nn.Module, CompressionRecord]:
    """Run a checked compression, record it, and save it when it has a folder."""
    model = runner(run)
    model.eval()
    record = _record(run, model, method, teacher_params)
    run.timings["total_s"] = run.timings.get("total_s", 0.0) + time.perf_counter() - began
    record.timings = dict(run.timings)
    if run.out is not None and is_main_process():
        _save(run.out, model, record)
    return model, record
