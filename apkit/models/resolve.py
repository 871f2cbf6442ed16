"""Any model from files, loaded without running the files' code: :func:`resolve_model` and its spec.

A model spec is one string, the same for every command and API function that takes a model file:

``PATH``
    An apkit checkpoint (what :func:`apkit.models.save_checkpoint`, ``apkit train`` and
    ``apkit compress`` write): it records its own architecture.
``ARCH=PATH``
    An architecture and a weights file.  ``ARCH`` is one of

    * ``torchvision:NAME``: any torchvision classification model
      (``torchvision.models.list_models(module=torchvision.models)``), built with
      ``torchvision.models.get_model(NAME, weights=None, num_classes=num_classes)``;
    * ``package.module:factory``: a callable importable from the current folder or ``PYTHONPATH``
      (as in ``uvicorn app:main``; ``factory`` may be dotted, ``module:Class.build``), called with
      ``num_classes=`` when it takes that parameter;
    * a name of :data:`apkit.models.MODELS` (``vgg_small``, ``resnet18``, ...).

    ``PATH`` holds a plain ``state_dict``: a ``torch.save`` file (``.pt``, ``.pth``, ...; a state
    dict nested under a ``"state_dict"`` or ``"model"`` key, a ``module.`` prefix of DataParallel,
    or an apkit checkpoint are fine too) or a ``.safetensors`` file.

Weights are read with ``torch.load(..., weights_only=True)`` (:func:`apkit.models.safe_load`) or
with safetensors, so a file never runs code: a pickle that would is refused.  (Importing a
``module:factory`` does run that module and calls the factory: it is code the user names on
purpose, so name only code you trust.  Only a callable is called, and a result that is not a
``torch.nn.Module``, or a factory that exits the program, is an apkit error.)  Weights of a
structurally pruned model, whose tensors are smaller than the architecture's, are loaded by first
resizing the layers to the saved shapes (:func:`apkit.models.checkpoint.conform_to_state_dict`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from apkit.core.errors import CheckpointError, UnknownNameError, ValidationError, unknown_name
from apkit.core.names import MODEL_SPEC_HELP
from apkit.core.validation import check_int
from apkit.models import checkpoint
from apkit.models.checkpoint import (
    FORMAT,
    MAX_CLASSES,
    check_finite_weights,
    conform_to_state_dict,
    load_checkpoint,
    mismatched_tensors,
    safe_load,
)
from apkit.models.quantized import refuse_quantized_state
from apkit.models.zoo import MODELS, create

__all__ = ["ModelSpec", "build_architecture", "load_weights", "parse_model_spec", "read_weights", "resolve_model"]

TORCHVISION = "torchvision:"
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP and torch.compile wrap every key
_SHOWN = 2  # mismatched tensors named per side in an error: enough to recognise the architecture


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: ``arch`` (``None`` for an apkit checkpoint) and the weights ``path``.

    ``kind`` is ``"checkpoint"``, ``"torchvision"``, ``"factory"`` or ``"apkit"``.
    """

    arch: str | None
    path: str

    @property
    def kind(self) -> str:
        if self.arch is None:
            return "checkpoint"
        if self.arch.startswith(TORCHVISION):
            return "torchvision"
        return "factory" if ":" in self.arch else "apkit"


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, shortened: error messages must stay one line."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def parse_model_spec(spec: str | os.PathLike) -> ModelSpec:
    """Split a model spec into architecture and weights file (see the module docstring).

    A spec whose part before ``=`` holds a path separator, or that names an existing file as a
    whole, is a plain ``PATH``; an architecture without ``=PATH`` is refused (apkit downloads no
    weights).

    Examples
    --------
    >>> parse_model_spec("runs/kd/model.pt")
    ModelSpec(arch=None, path='runs/kd/model.pt')
    >>> s = parse_model_spec("torchvision:resnet18=runs/pruned.pt")
    >>> s.arch, s.path, s.kind
    ('torchvision:resnet18', 'runs/pruned.pt', 'torchvision')
    >>> parse_model_spec("mypkg.nets:build=w.safetensors").kind
    'factory'
    """
    if isinstance(spec, os.PathLike):
        return ModelSpec(None, os.fspath(spec))
    if not isinstance(spec, str) or not spec.strip():
        raise ValidationError(f"a model spec must be {MODEL_SPEC_HELP}; got {spec!r}")
    text = spec.strip()
    arch, sep, path = text.partition("=")
    if not sep and not Path(text).exists() and (text.startswith(TORCHVISION) or text in MODELS):
        # An architecture alone: apkit downloads no weights, so the file must be named.
        raise ValidationError(f"model spec {spec!r} names an architecture but no weights file; write {text}=PATH "
                              "with PATH a state_dict (.pt/.pth) or .safetensors file")
    if not sep or not arch or "/" in arch or "\\" in arch or Path(text).is_file():
        return ModelSpec(None, text)
    if not path.strip():
        raise ValidationError(f"model spec {spec!r} names no weights file after '='; write ARCH=PATH, "
                              f"e.g. torchvision:resnet18=weights.pt")
    return ModelSpec(arch.strip(), path.strip())


def _needs_classes(arch: str, num_classes: int | None) -> int:
    if num_classes is None:
        raise ValidationError(f"{arch} needs the number of classes: pass num_classes=N "
                              "(--num-classes N on the command line)")
    return check_int(num_classes, "num_classes", minimum=1)


def _torchvision(name: str, num_classes: int | None) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in known:
        raise unknown_name(name, "torchvision model", known, choose="torchvision's classification models are")
    classes = _needs_classes(TORCHVISION + name, num_classes)
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=classes)
    except Exception as exc:  # noqa: BLE001 - whatever torchvision raises, say which model and why
        raise ValidationError(f"torchvision could not build {name!r} with num_classes={classes} "
                              f"({_one_line(exc)})") from exc


def _import_factory(arch: str) -> Any:
    module_name, _, attribute = arch.partition(":")
    if not module_name or not attribute:
        raise ValidationError(f"model factory {arch!r} must be written package.module:factory")
    # As `uvicorn app:main` does: the current folder is importable even under the `apkit` script.
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # an import runs arbitrary code: it may fail, or even call sys.exit, in any way
        raise ValidationError(f"cannot import {module_name!r} for model factory {arch!r} ({_one_line(exc)}); "
                              "make the module importable from the current folder or PYTHONPATH") from exc
    finally:
        if added:
            sys.path.remove(os.getcwd())
    for part in attribute.split("."):
        if not hasattr(target, part):
            callables = sorted(n for n, v in vars(target).items() if callable(v) and not n.startswith("_"))
            raise UnknownNameError(f"{module_name!r} has no {attribute!r} for model factory {arch!r}; "
                                   f"callables there: {', '.join(callables[:20]) or 'none'}")
        target = getattr(target, part)
    if not callable(target):
        raise ValidationError(f"model factory {arch!r} is a {type(target).__name__}, not a callable")
    return target


def _factory(arch: str, num_classes: int | None) -> nn.Module:
    factory = _import_factory(arch)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins have no signature: call them without arguments
        parameters = {}
    named = parameters.get("num_classes")
    takes = named is not None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if named is not None and named.default is inspect.Parameter.empty:
        _needs_classes(arch, num_classes)
    kwargs = {"num_classes": num_classes} if takes and num_classes is not None else {}
    call = f"{arch.partition(':')[2]}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        model = factory(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # user code: report whatever it raised, sys.exit's SystemExit included
        raised = f"SystemExit({exc.code!r}) (it exits the program)" if isinstance(exc, SystemExit) else _one_line(exc)
        raise ValidationError(f"model factory {arch!r} raised {raised} when called as {call}; a factory must "
                              "return a torch.nn.Module: fix the factory or its arguments") from exc
    if not isinstance(model, nn.Module):
        raise ValidationError(f"model factory {arch!r} returned a {type(model).__name__} when called as {call}, not "
                              "a torch.nn.Module; name a function or class that builds the model")
    return model


def build_architecture(arch: str, *, num_classes: int | None = None) -> nn.Module:
    """Build ``arch`` (``torchvision:NAME``, ``package.module:factory`` or an apkit name) with random weights.

    Examples
    --------
    >>> build_architecture("torchvision:resnet18", num_classes=3).fc
    Linear(in_features=512, out_features=3, bias=True)
    >>> build_architecture("vgg_small", num_classes=8).apkit_config["name"]
    'vgg_small'
    """
    if arch.startswith(TORCHVISION):
        return _torchvision(arch[len(TORCHVISION):].strip(), num_classes)
    if ":" in arch:
        return _factory(arch, num_classes)
    if arch not in MODELS:
        raise unknown_name(arch, "model", MODELS.names(),
                           choose="ARCH is torchvision:NAME, package.module:factory or one of")
    return create(arch, num_classes=_needs_classes(arch, num_classes))


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:  # an 8-byte header length, then the JSON header
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # an install requirement; say so rather than fail obscurely
        raise CheckpointError(f"reading {str(path)!r} needs the safetensors package; pip install safetensors") \
            from exc
    try:
        return load_file(path, device=str(map_location))
    except Exception as exc:  # noqa: BLE001 - damaged headers surface as several exception types
        raise CheckpointError(f"{str(path)!r} is corrupt or not a safetensors file ({_one_line(exc, 120)}); "
                              "re-create it") from exc


def _unwrapped(payload: Any) -> Any:
    """The state dict inside an apkit checkpoint or a training script's ``{"state_dict": ...}`` file."""
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        return payload.get("state_dict")
    if isinstance(payload, Mapping):
        for key in ("state_dict", "model"):  # training scripts often save {"epoch": ..., "state_dict": ...}
            if isinstance(payload.get(key), Mapping):
                return payload[key]
    return payload


def _state_dict_of(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    payload = _unwrapped(payload)
    if isinstance(payload, Mapping):
        refuse_quantized_state(payload, path)
    if not isinstance(payload, Mapping) or not payload:
        raise CheckpointError(f"{str(path)!r} holds no state_dict (found a {type(payload).__name__}); "
                              "save model.state_dict() with torch.save or safetensors")
    other = next((k for k, v in payload.items() if not isinstance(v, torch.Tensor)), None)
    if other is not None:
        raise CheckpointError(f"{str(path)!r} is not a state_dict: entry {other!r} is a "
                              f"{type(payload[other]).__name__}, not a tensor; save model.state_dict()")
    state = dict(payload)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (a ``torch.save`` file or ``.safetensors``), read without running code.

    Examples
    --------
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/w.pt"
    >>> torch.save({"epoch": 3, "state_dict": {"module.fc.weight": torch.ones(2, 2)}}, path)
    >>> list(read_weights(path))
    ['fc.weight']
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist; check the path")
    payload = _read_safetensors(path, map_location) if _is_safetensors(path) else safe_load(path, map_location)
    return _state_dict_of(payload, path)


def _check_classes(model: nn.Module, state: Mapping[str, torch.Tensor], *, label: str, path: str,
                   num_classes: int | None) -> None:
    """Refuse weights whose classifier (the last weight matrix) has another number of outputs."""
    if num_classes is None:
        return
    weights = [(k, v) for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() >= 2]
    if not weights or weights[-1][1].shape[0] != num_classes or weights[-1][0] not in state:
        return  # no recognisable classifier: the shape check below still applies
    key = weights[-1][0]
    saved = state[key]
    if saved.dim() >= 1 and saved.shape[0] != num_classes:
        shape = checkpoint.format_shape(saved)
        raise CheckpointError(f"weights file {path!r} has {saved.shape[0]} classes ({key} is {shape}) but {label} "
                              f"was built with num_classes={num_classes}; pass num_classes={saved.shape[0]} "
                              f"(--num-classes {saved.shape[0]})")


def _check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], *, label: str, path: str) -> None:
    """Refuse weights of another architecture, naming the first mismatched tensors of each kind."""
    ours, theirs = mismatched_tensors(model, dict(state), label)
    if ours or theirs:
        shown = "; ".join(ours[:_SHOWN] + theirs[:_SHOWN])
        raise CheckpointError(f"weights file {path!r} does not fit {label} ({len(ours) + len(theirs)} tensors "
                              f"differ: {shown}); pass the architecture the weights were saved from")


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], *, label: str = "the model",
                 path: str = "", num_classes: int | None = None) -> nn.Module:
    """Load ``state`` into ``model``, resizing its layers first where the weights were structurally pruned.

    Parameters
    ----------
    model : torch.nn.Module
        The (unpruned) architecture; modified in place.
    state : mapping of str to tensor
        The weights.
    label, path : str
        How error messages name the architecture and the file.
    num_classes : int, optional
        The class count the model was built with; weights with another one are refused.

    Returns
    -------
    torch.nn.Module
        ``model``.

    Examples
    --------
    >>> from torch import nn
    >>> wide = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    >>> narrow = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5, 2))
    >>> load_weights(wide, narrow.state_dict(), num_classes=2)[0]
    Conv2d(3, 5, kernel_size=(3, 3), stride=(1, 1))
    """
    _check_classes(model, state, label=label, path=path, num_classes=num_classes)
    check_finite_weights(dict(state), path or label)
    _check_fits(model, state, label=label, path=path)
    conform_to_state_dict(model, dict(state))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights file {path!r} does not fit {label} ({_one_line(exc, 300)}); "
                              "pass the architecture the weights were saved from") from exc
    return model


def resolve_model(spec: str | os.PathLike, *, num_classes: int | None = None,
                  map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model a spec names and load its weights, never running code from the weights file.

    Parameters
    ----------
    spec : str or path-like
        ``PATH`` (an apkit checkpoint) or ``ARCH=PATH`` with ``ARCH`` ``torchvision:NAME``,
        ``package.module:factory`` or an apkit model name, and ``PATH`` a state dict
        (``.pt``/``.pth``) or ``.safetensors`` file; see the module docstring.
    num_classes : int, optional
        Number of outputs.  Required for ``torchvision:`` and apkit names; passed to a factory
        that takes ``num_classes``; for an apkit checkpoint, a check of its class count.
    map_location : str or torch.device
        Where the weights (and the model) go.

    Returns
    -------
    torch.nn.Module
        The model in eval mode.  Models built by apkit names carry ``apkit_config`` (so
        :func:`apkit.models.save_checkpoint` can save them); the others are plain modules.

    Raises
    ------
    CheckpointError
        Missing, corrupt or unsafe files; weights of another architecture or class count.
    UnknownNameError
        An unknown torchvision or apkit name, a factory the module does not define.
    ValidationError
        A bad spec, ``num_classes`` missing where needed, a factory that cannot be imported or raises.

    Examples
    --------
    >>> import tempfile, torch, torchvision
    >>> path = tempfile.mkdtemp() + "/squeeze.pt"
    >>> torch.save(torchvision.models.squeezenet1_1(num_classes=4).state_dict(), path)
    >>> net = resolve_model(f"torchvision:squeezenet1_1={path}", num_classes=4)
    >>> net(torch.zeros(1, 3, 64, 64)).shape, net.training
    (torch.Size([1, 4]), False)
    """
    parsed = parse_model_spec(spec)
    if num_classes is not None:  # a class count beyond any dataset would only ask for memory no machine has
        check_int(num_classes, "num_classes", minimum=1, maximum=MAX_CLASSES)
    if parsed.arch is None:
        return load_checkpoint(parsed.path, map_location=map_location, expect_num_classes=num_classes)
    # The architecture first: a misspelt name or a missing num_classes is reported before any file is read.
    model = build_architecture(parsed.arch, num_classes=num_classes)
    state = read_weights(parsed.path, map_location)
    load_weights(model, state, label=parsed.arch, path=parsed.path, num_classes=num_classes)
    if parsed.kind == "torchvision":  # recorded, so that a quantized copy can be saved and rebuilt
        model.apkit_arch, model.apkit_num_classes = parsed.arch, num_classes
    return model.to(map_location).eval()
