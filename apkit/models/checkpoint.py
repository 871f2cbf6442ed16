"""Checkpoints with metadata, written atomically and loaded without running code.

A checkpoint is a plain dictionary of tensors, strings and numbers saved by ``torch.save``
and read with ``torch.load(..., weights_only=True)``: a pickle that would execute code is
refused.  It records how to rebuild the model (registry name and options); models whose
layers were narrowed by structured pruning are rebuilt, then resized to the saved shapes
(:func:`conform_to_state_dict`, which :func:`apkit.models.resolve_model` uses for plain state dicts too).
"""

from __future__ import annotations

import inspect
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from apkit.core.errors import CheckpointError
from apkit.core.io import atomic_write
from apkit.models import quantized
from apkit.models.zoo import MODELS, create

#: The file an apkit run (``apkit train``, ``apkit compress``) saves its model in.
MODEL_FILE = "model.pt"
FORMAT = "apkit-checkpoint"
FORMAT_VERSION = 1
_SHOWN = 3  # mismatched tensors named in an error: enough to recognise the problem, short enough to read


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    return atomic_write(path, lambda handle: torch.save(obj, handle), binary=True)


#: torch stores a checkpoint's entries uncompressed: what they expand to beyond the file's own size is
#: no torch file.  This much slack is allowed for the zip's own records.
_EXPANSION_SLACK = 1 << 20


def check_archive_size(path: str | os.PathLike) -> None:
    """Refuse a zip checkpoint whose entries expand beyond the file (a zip bomb) or the machine's free memory.

    Only the zip directory is read; nothing is decompressed.  ``torch.save`` stores its entries
    uncompressed, so their sizes add up to the file's size; a file that is no zip is left to
    ``torch.load``.

    Examples
    --------
    >>> import io, tempfile, zipfile
    >>> path = tempfile.mkdtemp() + "/bomb.pt"
    >>> with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
    ...     archive.writestr("bomb/data/0", bytes(50_000_000))
    >>> try:
    ...     check_archive_size(path)
    ... except CheckpointError as exc:
    ...     print(str(exc).split(", more")[0].split("bomb.pt' ")[1])
    expands to 50.0 MB from a file of 48.7 kB
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip, or a damaged one: torch.load says which
    expanded, size = sum(entry.file_size for entry in entries), path.stat().st_size
    free = available_memory()
    if expanded > size + _EXPANSION_SLACK or (free is not None and expanded > free):
        limit = "its own size (torch stores checkpoints uncompressed)" if expanded > size + _EXPANSION_SLACK else \
            f"the free memory ({_bytes(free)})"
        raise CheckpointError(f"checkpoint {str(path)!r} expands to {_bytes(expanded)} from a file of {_bytes(size)}, "
                              f"more than {limit}; it was refused unread: use a file written by torch.save or "
                              "apkit.models.save_checkpoint")


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (Linux ``MemAvailable``), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; every failure becomes a :class:`CheckpointError`.

    The zip's entries are checked against the file's and the machine's size first
    (:func:`check_archive_size`), so a zip bomb is refused before it is expanded.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a file; name the checkpoint file in it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path")
    check_archive_size(path)
    try:
        with warnings.catch_warnings():  # a foreign pickle is refused below; torch's protocol notice is noise
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # torch's own unpickler of int8 tensors warns about itself
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated.*")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch reports corrupt bytes with the same exception as forbidden objects: a pickle that
        # names a global (a class or function to call), or a bare pickle stream, is the unsafe case.
        with open(path, "rb") as handle:
            is_pickle = handle.read(1) == pickle.PROTO
        if is_pickle or "GLOBAL" in str(exc):
            raise CheckpointError(
                f"checkpoint {str(path)!r} was refused: it holds objects other than tensors and plain data "
                "(loading it could run code); save only its state_dict (torch.save(model.state_dict(), path) or "
                "safetensors) or use apkit.models.save_checkpoint"
            ) from exc
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a PyTorch file ({type(exc).__name__}); re-create it"
        ) from exc
    except Exception as exc:  # damaged bytes surface as many exception types (EOFError, IndexError, ...)
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a PyTorch file ({type(exc).__name__}); "
            "re-create it"
        ) from exc


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, meta: dict | None = None) -> Path:
    """Save ``model`` (built by :func:`apkit.models.create`) with its build recipe and ``meta``.

    Unstructured-pruning masks must be baked first (``apkit.compression`` does it).  An int8
    model is saved with its quantization (:func:`apkit.models.quantized.quantized_payload`).
    """
    if isinstance(model, quantized.QuantizedModel):
        payload = quantized.quantized_payload(model, meta=meta)
        return atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, path)
    config = getattr(model, "apkit_config", None)
    if config is None:
        raise CheckpointError(
            f"{type(model).__name__} was not built by apkit.models.create, so its checkpoint could not "
            "be rebuilt; build it with apkit.models.create or save its state_dict yourself"
        )
    state = model.state_dict()
    if any(key.endswith(("_orig", "_mask")) for key in state):
        raise CheckpointError("model still holds pruning masks; call apkit.compression.bake_masks(model) first")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "meta": dict(meta or {}),
        "state_dict": state,
    }
    return atomic_save(payload, path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and check the raw checkpoint dictionary (``config``, ``meta``, ``state_dict``)."""
    payload = safe_load(path, map_location)
    if isinstance(payload, dict) and payload.get("format") != FORMAT:
        quantized.refuse_quantized_state(payload, path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an apkit checkpoint (no apkit metadata); "
            "apkit reads checkpoints written by apkit.models.save_checkpoint or the apkit CLI; for a plain "
            "state_dict name its architecture: ARCH=PATH, e.g. torchvision:resnet18=PATH"
        )
    version = payload.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"checkpoint {str(path)!r} has a malformed format_version {version!r}; re-create it")
    if version > FORMAT_VERSION:
        # A newer layout may mean something else by the same keys: refuse rather than guess.
        raise CheckpointError(f"checkpoint {str(path)!r} was written by a newer apkit (format {version}); this apkit "
                              f"reads format {FORMAT_VERSION}: upgrade apkit")
    config, state = payload.get("config"), payload.get("state_dict")
    if not (isinstance(config, dict) and {"name", "num_classes"} <= set(config)) or not isinstance(state, dict) \
            or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {str(path)!r} lacks its architecture (config) or its weights (a state_dict "
                              "of tensors): the file was damaged or edited; re-create it")
    # An int8 model names its float architecture as a model spec, which its own loader resolves.
    check_config(config, path, registered=quantized.QUANTIZATION_KEY not in payload)
    return payload


#: The most classes, and the largest integer architecture option, a checkpoint's config may hold: beyond
#: them the model alone would not fit a machine (1e10 classes asked for 2.5 TB).
MAX_CLASSES = 100_000
MAX_INPUT_SIZE = 4096
MAX_OPTION = 100_000


def check_config(config: dict, path: str | os.PathLike, *, registered: bool = True) -> None:
    """Check a checkpoint's architecture (name, class count, options) for type and size before building it.

    ``registered=False`` checks the class count and the options' form only (a name that is not one
    of :data:`~apkit.models.MODELS`, such as an int8 model's ``torchvision:NAME``).

    Examples
    --------
    >>> try:
    ...     check_config({"name": "vgg_small", "num_classes": "8", "options": {}}, "m.pt")
    ... except CheckpointError as exc:
    ...     print(str(exc).split(";")[0])
    checkpoint 'm.pt' has num_classes '8' (a str) in its config
    """
    where = f"checkpoint {str(path)!r} has"
    fix = "the file was damaged or edited, re-create it"
    _check_count(config["num_classes"], "num_classes", MAX_CLASSES, where)
    options = config.get("options", {})
    if not isinstance(options, dict):
        raise CheckpointError(f"{where} options {options!r} in its config, not a mapping; {fix}")
    if not registered:
        return
    builder = MODELS.get(config["name"])
    known = [name for name in inspect.signature(builder).parameters if name != "num_classes"]
    for key, value in options.items():
        if key not in known:
            raise CheckpointError(f"{where} option {key!r} that model {config['name']!r} does not take "
                                  f"(its options: {', '.join(known) or 'none'}); {fix}")
        if isinstance(value, int) and not isinstance(value, bool):
            _check_count(value, key, MAX_INPUT_SIZE if key == "input_size" else MAX_OPTION, where)


def _check_count(value: object, name: str, maximum: int, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        kind = f" (a {type(value).__name__})" if not isinstance(value, int) or isinstance(value, bool) else ""
        raise CheckpointError(f"{where} {name} {value!r}{kind} in its config; it must be an integer from 1 to "
                              f"{maximum}: the file was damaged or edited, re-create it")


def load_checkpoint(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    expect_arch: str | None = None,
    expect_num_classes: int | None = None,
) -> nn.Module:
    """Rebuild the model saved at ``path`` and load its weights.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_checkpoint`.
    map_location : str or torch.device
        Where to put the tensors.
    expect_arch, expect_num_classes : optional
        If given, a checkpoint of another architecture or class count is refused.

    Returns
    -------
    torch.nn.Module
        The model in eval mode, with ``apkit_config`` and ``apkit_meta`` attributes.
    """
    payload = read_checkpoint(path, map_location)
    config = payload["config"]
    if expect_arch is not None and config["name"] != expect_arch:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {config['name']!r} model, not {expect_arch!r}; "
            "pass the matching checkpoint or model name"
        )
    if expect_num_classes is not None and config["num_classes"] != expect_num_classes:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has {config['num_classes']} classes but the data has "
            f"{expect_num_classes}; use a checkpoint trained on this dataset"
        )
    if quantized.QUANTIZATION_KEY in payload:  # an int8 model: rebuilt through its float architecture
        return quantized.load_quantized(payload, path)
    model = create(config["name"], num_classes=config["num_classes"], **config.get("options", {}))
    state = payload["state_dict"]
    check_finite_weights(state, path)
    _check_fits(model, state, config["name"], path)
    conform_to_state_dict(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # the checks above should leave nothing to torch; keep its message short
        text = " ".join(str(exc).split())
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its architecture ({text[:300]}); "
                              "re-create it") from exc
    model.apkit_meta = payload["meta"]
    return model.to(map_location).eval()


def check_finite_weights(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Refuse weights holding NaN or infinity: every prediction and map of the model would be NaN.

    Examples
    --------
    >>> try:
    ...     check_finite_weights({"fc.weight": torch.tensor([1.0, float("nan")])}, "student.pt")
    ... except CheckpointError as exc:
    ...     print(str(exc).split(";")[0])
    the weights in 'student.pt' hold NaN or infinity (fc.weight)
    """
    bad = [key for key, tensor in state.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        shown = ", ".join(bad[:_SHOWN]) + (f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
        raise CheckpointError(f"the weights in {str(path)!r} hold NaN or infinity ({shown}); the model diverged "
                              "or the file was damaged: use the weights of a run that trained well")


def format_shape(tensor: torch.Tensor) -> str:
    """``(2, 4)``: a tensor's shape as error messages write it."""
    return "(" + ", ".join(map(str, tensor.shape)) + ")"


def mismatched_tensors(model: nn.Module, state: dict[str, torch.Tensor], label: str) -> tuple[list[str], list[str]]:
    """What keeps ``state`` from loading into ``model``: one phrase per missing, extra or too large tensor.

    A saved tensor may be smaller than the model's (structured pruning: the layer is resized to
    it) but not of another rank or larger.  Returns the model's tensors that do not fit, in its
    order, and the saved tensors ``model`` lacks.

    Examples
    --------
    >>> from torch import nn
    >>> mismatched_tensors(nn.Linear(4, 2), {"weight": torch.zeros(2, 8)}, "the model")
    (['weight is (2, 8) in the file but (2, 4) in the model', 'bias (2) is missing from the file'], [])
    """
    expected = model.state_dict()
    ours = []
    for key, tensor in expected.items():
        if key not in state:
            ours.append(f"{key} {format_shape(tensor)} is missing from the file")
        elif state[key].dim() != tensor.dim() or any(s > e for s, e in zip(state[key].shape, tensor.shape)):
            ours.append(f"{key} is {format_shape(state[key])} in the file but {format_shape(tensor)} in {label}")
    theirs = [f"{key} {format_shape(state[key])} is not in {label}" for key in state if key not in expected]
    return ours, theirs


def _check_fits(model: nn.Module, state: dict[str, torch.Tensor], arch: str, path) -> None:
    """Refuse a checkpoint whose weights do not fit its own architecture, naming the first few tensors."""
    ours, theirs = mismatched_tensors(model, state, "the model")
    problems = ours + theirs
    if problems:
        shown = "; ".join(problems[:_SHOWN])
        more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its architecture {arch!r} ({len(problems)} "
                              f"tensors differ: {shown}{more}); the file was damaged or edited: re-create it")


def conform_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resize the layers of ``model`` in place to the tensor shapes stored in ``state``.

    This rebuilds structurally pruned models (fewer channels, e.g. Torch-Pruning's output) from
    their unpruned architecture.  Layers are resized, not replaced, so a subclass keeps its own
    ``forward``: convolutions (1-3 d; a depthwise convolution's ``groups`` follows its channel
    count, other groups stay), every BatchNorm / InstanceNorm, Linear, LayerNorm and GroupNorm.
    A bare parameter or buffer of a model-defined block (a layer scale, say) takes the saved
    shape; any other ``torch.nn`` layer whose shapes differ is refused.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, groups=8))
    >>> pruned = {"0.weight": torch.zeros(5, 3, 3, 3), "0.bias": torch.zeros(5), "2.weight": torch.zeros(5, 1, 3, 3),
    ...           "2.bias": torch.zeros(5), **{f"1.{k}": torch.zeros(5) for k in ("weight", "bias", "running_mean",
    ...                                                                             "running_var")}}
    >>> conform_to_state_dict(net, pruned)
    >>> net[0], net[1].num_features, net[2]
    (Conv2d(3, 5, kernel_size=(3, 3), stride=(1, 1)), 5, Conv2d(5, 5, kernel_size=(3, 3), stride=(1, 1), groups=5))
    """
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        own = {key: tensor for key, tensor in [*module.named_parameters(recurse=False),
                                               *module.named_buffers(recurse=False)] if tensor is not None}
        saved = {key: tuple(state[prefix + key].shape) for key in own if prefix + key in state}
        if any(tuple(own[key].shape) != shape for key, shape in saved.items()):
            _conform_module(module, name, own=own, saved=saved)


def _conform_module(module: nn.Module, name: str, *, own: dict[str, torch.Tensor],
                    saved: dict[str, tuple[int, ...]]) -> None:
    """Resize one module whose own tensors (``own``) differ from the ``saved`` shapes."""
    resize = next((fn for types, fn in _RESIZERS if isinstance(module, types)), None)
    if resize is not None:
        resize(module, saved, name)
    elif type(module).__module__.startswith("torch.nn"):
        key, shape = next((k, v) for k, v in saved.items() if tuple(own[k].shape) != v)
        raise CheckpointError(f"cannot resize layer {name!r} ({type(module).__name__}): its {key} is "
                              f"{tuple(own[key].shape)} but the weights hold {shape}; apkit resizes convolutions, "
                              "norms and Linear layers only")
    else:
        for key, shape in saved.items():
            _set_tensor(module, key, shape)


def _set_tensor(module: nn.Module, key: str, shape: tuple[int, ...]) -> None:
    """Replace ``module.<key>`` (a parameter or buffer) by an uninitialised tensor of ``shape``."""
    old = getattr(module, key)
    if old is None or tuple(old.shape) == tuple(shape):
        return
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    # A Parameter stays a Parameter; assigning a tensor to a registered buffer's name updates that buffer.
    setattr(module, key, nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new)


def _resize_conv(module: nn.Module, saved: dict, name: str) -> None:
    out_channels, per_group = saved.get("weight", (module.out_channels, module.in_channels // module.groups))[:2]
    if module.groups > 1 and module.groups == module.in_channels:
        # Depthwise (MobileNet, EfficientNet): one group per input channel, so groups follow the channels.
        multiplier = module.out_channels // module.in_channels
        groups = out_channels // multiplier
        in_channels = groups * per_group
    else:
        groups = module.groups
        in_channels = per_group * groups
    if out_channels % groups:
        raise CheckpointError(f"cannot resize layer {name!r} to {out_channels} output channels in {groups} groups; "
                              "the weights do not fit this architecture's grouped convolution")
    module.in_channels, module.out_channels, module.groups = in_channels, out_channels, groups
    for key, shape in saved.items():
        _set_tensor(module, key, shape)


def _resize_norm(module: nn.Module, saved: dict, name: str) -> None:
    features = next(iter(saved.values()))[0]
    if isinstance(module, nn.GroupNorm):
        if features % module.num_groups:
            raise CheckpointError(f"cannot resize layer {name!r} (GroupNorm, {module.num_groups} groups) to "
                                  f"{features} channels; the weights do not fit this architecture")
        module.num_channels = features
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(saved.get("weight", saved.get("bias", (features,))))
    else:
        module.num_features = features
    for key, shape in saved.items():
        _set_tensor(module, key, shape)


def _resize_linear(module: nn.Linear, saved: dict, name: str) -> None:
    module.out_features, module.in_features = saved.get("weight", (module.out_features, module.in_features))
    for key, shape in saved.items():
        _set_tensor(module, key, shape)


_RESIZERS = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), _resize_conv),
    ((nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm), _resize_norm),
    (nn.Linear, _resize_linear),
)
