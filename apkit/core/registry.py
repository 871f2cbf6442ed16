"""A registry maps names to objects; one registry per kind feeds both the API and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from apkit.core.errors import ValidationError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind (models, datasets, attribution methods, ...).

    Parameters
    ----------
    kind : str
        What the registry holds, used in error messages ("model", "dataset", ...).

    Examples
    --------
    >>> shapes = Registry("shape")
    >>> @shapes.register("square", help="four equal sides")
    ... def square(side):
    ...     return side * side
    >>> shapes.get("square")(3)
    9
    >>> shapes.names()
    ['square']
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, help: str = "") -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""

        def add(target: T) -> T:
            if name in self._entries:
                raise ValidationError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = target
            doc = (getattr(target, "__doc__", None) or "").strip().splitlines()
            self._help[name] = help or (doc[0] if doc else "")
            return target

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the known ones."""
        if not isinstance(name, str) or name not in self._entries:
            raise unknown_name(name, self.kind, self.names())
        return self._entries[name]

    def help(self, name: str) -> str:
        """One-line description of ``name``."""
        self.get(name)
        return self._help[name]

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"

