"""Old public names, kept working for one release with a ``DeprecationWarning`` that names the new one.

Only names that the README or the documentation used are kept; each is listed where it is kept:
renamed keyword arguments with :func:`renamed_keywords`, renamed module attributes with
:func:`deprecated_attributes`, a moved module with :func:`deprecated_module`.
"""

from __future__ import annotations

import functools
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["ItemAccess", "deprecated_attributes", "deprecated_module", "renamed_keywords", "warn_deprecated"]


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new} instead",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_keywords(**renames: str | tuple[str, Callable[[Any], Any]]) -> Callable:
    """Accept old keyword names of a function: ``old="new"`` or ``old=("new", convert)``.

    Examples
    --------
    >>> import warnings
    >>> @renamed_keywords(tolerance=("tolerances", lambda t: (t,)))
    ... def score(*, tolerances=(0,)):
    ...     return tolerances
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     score(tolerance=3), caught[0].category.__name__
    ((3,), 'DeprecationWarning')
    """

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, rename in renames.items():
                if old not in kwargs:
                    continue
                new, convert = (rename, None) if isinstance(rename, str) else rename
                if new in kwargs:
                    raise TypeError(f"{function.__qualname__}() got both {old}= and {new}=; pass only {new}=")
                value = kwargs.pop(old)
                kwargs[new] = convert(value) if convert is not None else value
                warn_deprecated(f"{function.__qualname__}({old}=...)", f"{new}=")
            return function(*args, **kwargs)

        return wrapper

    return decorate


def deprecated_attributes(module_name: str, aliases: dict[str, tuple[str, Callable[[], Any]]]) -> Callable:
    """A module ``__getattr__`` serving ``{old name: (new spelling, getter)}`` with a warning."""

    def __getattr__(name: str) -> Any:
        if name in aliases:
            new, getter = aliases[name]
            warn_deprecated(f"{module_name}.{name}", new)
            return getter()
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


def deprecated_module(old: str, new: str, target: Callable[[], types.ModuleType]) -> None:
    """Make ``import old`` / ``from old import x`` read from the module ``target()`` with a warning.

    The alias is put in ``sys.modules`` directly, so importing it never rebinds an attribute of
    its parent package (``apkit.audit`` stays the function while ``apkit.audit`` the module path
    still imports).
    """

    class _Alias(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            warn_deprecated(f"{old}.{name}", f"{new}.{name}")
            return getattr(target(), name)

    sys.modules.setdefault(old, _Alias(old, f"Deprecated alias of {new}."))


class ItemAccess:
    """Mixin for a result dataclass that used to be a plain dict: ``result["name"]`` still reads
    ``result.name``, with a warning, for one release."""

    def __getitem__(self, name: str) -> Any:
        if not isinstance(name, str) or name.startswith("_") or not hasattr(self, name):
            raise KeyError(name)
        warn_deprecated(f'{type(self).__name__}["{name}"]', f"{type(self).__name__}.{name}")
        return getattr(self, name)
