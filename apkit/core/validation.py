"""Input checks shared by the whole package: one helper per kind of check, one message style.

Every check raises :class:`apkit.core.errors.ValidationError` with a message of the form
``"<name> must be <requirement>, got <what was given>"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from apkit.core.errors import ValidationError, unknown_name


def _fail(name: str, requirement: str, got: object) -> ValidationError:
    return ValidationError(f"{name} must be {requirement}, got {got}")


def check_tensor(
    value: object,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool | None = None,
    finite: bool = False,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of the given rank (and float/finite if asked); return it."""
    if not isinstance(value, torch.Tensor):
        raise _fail(name, "a torch.Tensor", type(value).__name__)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            ranks = " or ".join(str(r) for r in allowed)
            raise _fail(name, f"a tensor of rank {ranks}", f"shape {tuple(value.shape)}")
    if floating is True and not value.is_floating_point():
        raise _fail(name, "a floating-point tensor", value.dtype)
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise _fail(name, "free of NaN and infinite values", "non-finite entries")
    return value


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Check two tensors have one shape and live on one device."""
    if a.shape != b.shape:
        raise ValidationError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    check_same_device(a, b, name_a, name_b)


def check_same_device(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Check two tensors live on one device; say how to move them if not."""
    if a.device != b.device:
        raise ValidationError(
            f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}; "
            f"move one with .to({a.device!s})"
        )


def check_module(value: object, name: str = "model") -> nn.Module:
    """Check ``value`` is a ``torch.nn.Module``; return it."""
    if not isinstance(value, nn.Module):
        raise _fail(name, "a torch.nn.Module", type(value).__name__)
    return value


def check_dataset(value: object, name: str = "dataset", *, allow_empty: bool = False) -> Any:
    """Check ``value`` is a map-style dataset (``__getitem__`` and ``__len__``), non-empty unless allowed."""
    if not (hasattr(value, "__getitem__") and hasattr(value, "__len__")):
        raise _fail(name, "a map-style dataset (with __getitem__ and __len__)", type(value).__name__)
    if not allow_empty and len(value) == 0:
        raise ValidationError(f"{name} is empty; it must hold at least one example")
    return value


def parse_overrides(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """Parse ``"a.b=value"`` settings into ``(["a", "b"], value)``; values are JSON, else a bare word.

    Examples
    --------
    >>> parse_overrides(["train.epochs=5", "model=vgg_small", "ratios=[0.5, 0.7]"])
    [(['train', 'epochs'], 5), (['model'], 'vgg_small'), (['ratios'], [0.5, 0.7])]
    """
    parsed = []
    for item in items:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ValidationError(f"a setting must look like a.b=value (e.g. train.epochs=5), got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word such as a path or a layer name
        parsed.append((key.strip().split("."), value))
    return parsed


def check_known(keys: Iterable[object], what: str, known: Iterable[str]) -> None:
    """Refuse the first of ``keys`` not among ``known`` (e.g. a keyword that is no field of a settings
    dataclass) with the one unknown-name error.

    Examples
    --------
    >>> check_known(["epochs"], "training setting", ["epochs", "lr"])
    >>> check_known(["epoch"], "training setting", ["epochs", "lr"])
    Traceback (most recent call last):
    ...
    apkit.core.errors.UnknownNameError: unknown training setting 'epoch'; did you mean epochs? choose one of: epochs, lr
    """
    known = list(known)
    for key in keys:
        if key not in known:
            raise unknown_name(key, what, known)


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """Check ``value`` is one of ``choices``; an unknown value gets :func:`unknown_name`'s error."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise unknown_name(value, name, options)
    return value


def check_int(value: object, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Check ``value`` is an integer within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, "an integer", repr(value))
    if minimum is not None and value < minimum:
        raise _fail(name, f">= {minimum}", value)
    if maximum is not None and value > maximum:
        raise _fail(name, f"<= {maximum}", value)
    return value


def check_float(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """Check ``value`` is a finite real number within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(name, "a finite number", repr(value))
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise _fail(name, f"{'>' if exclusive_minimum else '>='} {minimum}", value)
    if maximum is not None and (value >= maximum if exclusive_maximum else value > maximum):
        raise _fail(name, f"{'<' if exclusive_maximum else '<='} {maximum}", value)
    return float(value)


def check_fraction(value: object, name: str, *, allow_zero: bool = True, allow_one: bool = False) -> float:
    """Check ``value`` is a fraction in [0, 1) (bounds adjustable)."""
    return check_float(
        value, name, minimum=0.0, maximum=1.0,
        exclusive_minimum=not allow_zero, exclusive_maximum=not allow_one,
    )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` means CUDA when available, else CPU; other values are checked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValidationError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValidationError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu")
    return resolved
