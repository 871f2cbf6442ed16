"""Atomic file writes: a reader never sees a half-written result, and an interrupted write loses nothing."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from apkit.core.errors import ValidationError


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over ``path``.

    An operating-system error on the way (a folder that cannot be created or written, a full
    disk) becomes a :class:`~apkit.core.errors.ValidationError` that names the path: every result
    file, checkpoint and model apkit writes goes through here.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; a result is as readable as any file
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise
    return path


def _write_error(path: Path, exc: OSError) -> ValidationError:
    fix = "free some disk space or pick another output folder" if exc.errno == errno.ENOSPC else \
        "pick another output folder"
    return ValidationError(f"cannot write {str(path)!r} ({exc.strerror or exc}); {fix}")


def check_writable(folder: str | os.PathLike) -> Path:
    """Check, before any work is done, that files can be written in ``folder``; return it as a Path.

    A missing folder is not created (the first write creates it, so a refused run leaves nothing
    behind): its nearest existing parent is checked instead.  Each check writes and removes an
    entry of its own name, so processes under ``torchrun`` may check one folder at once.
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.absolute().parents) if p.exists()), None)
    try:
        if existing is None or not existing.is_dir():
            what = "is a file" if existing == folder else f"lies under {str(existing)!r}, a file"
            raise ValidationError(f"the output folder {str(folder)!r} {what}; pick another output folder")
        if existing == folder:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".apkit-write-check-"):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".apkit-write-check-"))
    except OSError as exc:
        raise ValidationError(f"cannot write to the folder {str(folder)!r} ({exc.strerror or exc}); "
                              "pick another output folder") from exc
    return folder


def check_out_dir(out_dir: str | os.PathLike | None, *, resume: bool, overwrite: bool,
                  finished: Callable[[Path], bool], holds: str, reuse: str, redo: str) -> Path | None:
    """The output folder of a run, checked before any work: writable, and not holding a finished run unless asked.

    Parameters
    ----------
    out_dir : path, optional
        The folder; ``None`` (no files written) is accepted unless ``resume``.
    resume, overwrite : bool
        Continue (or reuse) the run in ``out_dir``; replace it.  They exclude each other.
    finished : callable
        ``finished(folder)`` is true when ``folder`` holds a finished run.
    holds, reuse, redo : str
        What a finished run holds, what ``resume`` does with it and what ``overwrite`` does, in
        the error's words (``"a trained model (model.pt, metrics.json)"``, ``"reuse it"``,
        ``"train afresh over it"``).
    """
    if resume and out_dir is None:
        raise ValidationError("resume=True needs out_dir (the folder of the run to resume)")
    if resume and overwrite:
        raise ValidationError("resume and overwrite exclude each other: resume continues or reuses the run in "
                              "out_dir, overwrite replaces it; pass one of them")
    if out_dir is None:
        return None
    out = check_writable(out_dir)
    if finished(out) and not (resume or overwrite):
        raise ValidationError(f"{str(out)!r} already holds {holds}; pass resume=True (--resume) to {reuse}, "
                              f"overwrite=True (--overwrite) to {redo}, or another out_dir (--out)")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text))


def _json_safe(value: Any) -> Any:
    # JSON has no NaN; write null so that every JSON reader accepts the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (NaN/inf as null) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`atomic_write_json`."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
