"""One error hierarchy for everything apkit raises on bad input.

Every error says what is wrong and how to fix it.  The CLI turns an ``ApkitError`` into a
one-line message and exit code 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ApkitError(Exception):
    """Base class of every error apkit raises deliberately."""


class ValidationError(ApkitError, ValueError):
    """An argument has the wrong type, shape, range or value."""


class UnknownNameError(ApkitError, KeyError):
    """A name (model, dataset, method, layer, ...) is not known; the message lists the known ones."""

    def __str__(self):  # KeyError would quote the message; show it as written
        return str(self.args[0]) if self.args else ""


class DataError(ApkitError, ValueError):
    """A dataset root is missing, incomplete or malformed."""


class CheckpointError(ApkitError, ValueError):
    """A checkpoint is corrupt, unsafe, or does not fit the requested model."""


#: How many names an unknown-name error lists before it says how many there are in all.
LISTED_NAMES = 12


def did_you_mean(value: object, known: Iterable[object]) -> str:
    """``"did you mean a or b? "`` for the close matches of ``value`` among ``known``, else ``""``.

    Examples
    --------
    >>> did_you_mean("gradcm", ["gradcam", "lrp"])
    'did you mean gradcam? '
    >>> did_you_mean(3, ["gradcam"])
    ''
    """
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(k) for k in known], n=3, cutoff=0.6)
    return f"did you mean {' or '.join(close)}? " if close else ""


def unknown_name(value: object, name: str, known: Iterable[object], *,
                 choose: str = "choose one of") -> UnknownNameError:
    """The one error for an unknown name: what was given, close matches, then the known names
    (close matches first, at most :data:`LISTED_NAMES` of them).

    Examples
    --------
    >>> print(unknown_name("lrpp", "attribution method", ["gradcam", "lrp", "rap"]))
    unknown attribution method 'lrpp'; did you mean lrp? choose one of: lrp, gradcam, rap
    """
    known = [str(k) for k in known]
    close = difflib.get_close_matches(value, known, n=3, cutoff=0.6) if isinstance(value, str) else []
    ordered = [*close, *(k for k in known if k not in close)]
    more = f", ... ({len(ordered)} in all)" if len(ordered) > LISTED_NAMES else ""
    shown = ", ".join(ordered[:LISTED_NAMES]) + more
    return UnknownNameError(f"unknown {name} {value!r}; {did_you_mean(value, known)}{choose}: {shown}")
