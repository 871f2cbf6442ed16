"""Checkpoints with metadata, written atomically and loaded without running code.

A checkpoint is a plain dictionary of tensors, strings and numbers saved by ``torch.save``
and read with ``torch.load(..., weights_only=True)``: a pickle that would execute code is
refused.  It records how to rebuild the model (registry name and options); models whose
layers were narrowed by structured pruning are rebuilt, then resized to the saved shapes.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from apkit._io import atomic_write
from apkit.errors import CheckpointError
from apkit.models.zoo import create

FORMAT = "apkit-checkpoint"
FORMAT_VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    return atomic_write(path, lambda handle: torch.save(obj, handle), binary=True)


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; every failure becomes a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path")
    try:
        with warnings.catch_warnings():  # a foreign pickle is refused below; torch's protocol notice is noise
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch reports corrupt bytes with the same exception as forbidden objects: a pickle that
        # names a global (a class or function to call), or a bare pickle stream, is the unsafe case.
        with open(path, "rb") as handle:
            is_pickle = handle.read(1) == pickle.PROTO
        if is_pickle or "GLOBAL" in str(exc):
            raise CheckpointError(
                f"checkpoint {str(path)!r} was refused: it holds objects other than tensors and plain data "
                "(loading it could run code); re-save it with apkit.models.save_checkpoint"
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

    Unstructured-pruning masks must be baked first (``apkit.compression`` does it).
    """
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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an apkit checkpoint (no apkit metadata); "
            "apkit reads checkpoints written by apkit.models.save_checkpoint or the apkit CLI"
        )
    return payload


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
    model = create(config["name"], num_classes=config["num_classes"], **config.get("options", {}))
    state = payload["state_dict"]
    conform_to_state_dict(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its architecture: {exc}") from exc
    model.apkit_meta = payload["meta"]
    return model.to(map_location).eval()


def conform_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resize Conv2d / BatchNorm2d / Linear layers in place to the shapes stored in ``state``.

    This rebuilds structurally pruned models (fewer channels) from their unpruned recipe.
    """
    for name, module in list(model.named_modules()):
        key = f"{name}.weight" if name else "weight"
        if key not in state:
            continue
        shape = tuple(state[key].shape)
        if tuple(getattr(module, "weight", torch.empty(0)).shape) == shape:
            continue
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                shape[1] * module.groups, shape[0], module.kernel_size, module.stride, module.padding,
                module.dilation, module.groups, module.bias is not None, module.padding_mode,
            )
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        elif isinstance(module, nn.Linear):
            new = nn.Linear(shape[1], shape[0], module.bias is not None)
        else:
            raise CheckpointError(f"cannot resize layer {name!r} ({type(module).__name__}) to {shape}")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
