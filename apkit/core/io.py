"""Atomic file writes: a reader never sees a half-written result, and an interrupted write loses nothing."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from apkit.core.errors import DataError, ValidationError


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over ``path``.

    An operating-system error on the way (a folder that cannot be created or written, a full
    disk) becomes a :class:`~apkit.core.errors.ValidationError` that names the path and the free
    space: every result file, checkpoint and model apkit writes goes through here.  ``torch.save``
    reports a full disk as a ``RuntimeError`` ("unexpected pos ..."), so a failed write of its
    stream is caught too; the temporary file is removed either way.
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
        if isinstance(exc, OSError) or is_write_failure(exc):
            raise _write_error(path, exc) from exc
        raise
    return path


#: Phrases by which torch's stream writer reports a write that did not reach the disk.
_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter", "file write failed", "write failed")


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed write: an ``OSError``, or torch's ``RuntimeError`` for one (a full disk).

    Examples
    --------
    >>> is_write_failure(RuntimeError("[enforce fail at inline_container.cc:783] . unexpected pos 1715392 vs 1715280"))
    True
    >>> is_write_failure(RuntimeError("size mismatch"))
    False
    """
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, RuntimeError) and any(phrase in str(exc) for phrase in _WRITE_FAILURES)


def free_space(path: str | os.PathLike) -> str:
    """The free space of the disk holding ``path`` (or its nearest existing parent), as ``"1.5 MB"``.

    Examples
    --------
    >>> free_space("/").endswith("B")
    True
    """
    existing = next((p for p in (Path(path), *Path(path).absolute().parents) if p.exists()), Path("/"))
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return "unknown"
    for unit in ("B", "kB", "MB", "GB"):
        if free < 1000 or unit == "GB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1000
    return f"{free:.1f} TB"


def _write_error(path: Path, exc: BaseException) -> ValidationError:
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or isinstance(exc, RuntimeError)
    reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:120]
    if full:
        free = free_space(path.parent)
        return ValidationError(f"cannot write {str(path)!r} ({reason}; only {free} free on its disk); free some disk "
                               "space or pick another output folder")
    return ValidationError(f"cannot write {str(path)!r} ({reason}); pick another output folder")


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


# ------------------------------------------------------------------------------------------- file sets

_SET_PREFIX = ".apkit-set-"
_SET_DONE = ".complete"  # written into a staging folder once every file of the set is on the disk


def atomic_write_set(folder: str | os.PathLike, write: Callable[[Path], Mapping[str, str]], *,
                     replaces: Sequence[str] = ()) -> dict[str, Path]:
    """Write a set of files (and folders, such as ``figures/``) that belong together, whole or not at all.

    ``write(staging)`` writes the set into ``staging``, a temporary sibling folder inside ``folder``,
    and returns ``{key: name}`` of what it wrote.  Once every file is on the disk, each entry is
    renamed over its namesake in ``folder`` (the old entry is moved aside first, so a folder such
    as ``figures/`` is replaced whole, not merged).  A failure while writing (a full disk, an
    error of ``write``) leaves the previous set as it was and no temporary files.  A process
    killed during the renames leaves a staging folder marked complete: the next write of a set in
    ``folder`` finishes those renames first, so a set is never left mixed from two runs, and
    removes any unfinished staging folder and any stray ``.NAME.*.tmp`` file of the set's names.
    Entries named in ``replaces`` that the new set lacks (the figures of an older report) are
    removed with the swap, so no entry of an older set outlives it.

    Returns
    -------
    dict
        ``{key: folder / name}``.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> def write(stage):
    ...     (stage / "a.txt").write_text("one")
    ...     (stage / "figures").mkdir()
    ...     return {"a": "a.txt", "figures": "figures"}
    >>> sorted(p.name for p in atomic_write_set(out, write).values())
    ['a.txt', 'figures']
    >>> sorted(p.name for p in out.iterdir())
    ['a.txt', 'figures']
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        recover_sets(folder)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=_SET_PREFIX))
    except OSError as exc:
        raise _write_error(folder, exc) from exc
    try:
        names = dict(write(staging))
        _sync_tree(staging)
        _sync_file(staging / _SET_DONE, "\n".join(replaces).encode("utf-8"))
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if is_write_failure(exc):
            raise _write_error(folder, exc) from exc
        if isinstance(exc, ValidationError):  # a writer's own error: name the file where the set goes
            raise ValidationError(str(exc).replace(str(staging), str(folder))) from exc
        raise
    _swap_in(staging, folder)
    return {key: folder / name for key, name in names.items()}


def recover_sets(folder: str | os.PathLike) -> None:
    """Finish the swap of a complete staging folder left in ``folder`` by a killed process; drop unfinished ones.

    Stray temporary files of the entries involved (``.report.csv.<random>.tmp``) are removed too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for staging in sorted(folder.glob(_SET_PREFIX + "*")):
        if not staging.is_dir():
            continue
        if (staging / _SET_DONE).is_file():
            _swap_in(staging, folder)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    for stray in folder.glob(".*.tmp"):
        if stray.is_file() and stray.name.startswith(".report"):
            stray.unlink(missing_ok=True)


def _entries(staging: Path) -> list[str]:
    return sorted(p.name for p in staging.iterdir() if p.name not in (_SET_DONE, ".old")) if staging.is_dir() else []


def _swap_in(staging: Path, folder: Path) -> None:
    """Rename every entry of ``staging`` over its namesake in ``folder``, then remove ``staging``."""
    aside = staging / ".old"
    aside.mkdir(exist_ok=True)
    entries = _entries(staging)
    for name in (staging / _SET_DONE).read_text(encoding="utf-8").split("\n"):
        stale = folder / name
        if name and name not in entries and (stale.exists() or stale.is_symlink()):
            os.replace(stale, aside / name)
    for name in entries:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            os.replace(target, aside / name)  # a folder cannot be renamed over a non-empty one
        os.replace(staging / name, target)
        for stray in folder.glob(f".{name}.*.tmp"):
            stray.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def _sync_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_tree(root: Path) -> None:
    """Flush every file under ``root`` to the disk (a rename must not publish a file still in the page cache)."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


# ------------------------------------------------------------------------------------------------ images

#: The most pixels apkit decodes from one image or mask file (PIL's default bomb limit: about 9500 x 9500).
MAX_IMAGE_PIXELS = 89_478_485


@contextlib.contextmanager
def open_image(path: str | os.PathLike, what: str = "image") -> Iterator[Any]:
    """``PIL.Image.open(path)`` with its size checked against :data:`MAX_IMAGE_PIXELS` before it is decoded.

    A decompression bomb (an image whose header claims more pixels than that), a folder in place
    of the file, or a file PIL cannot read is a :class:`~apkit.core.errors.DataError` that names the
    file, what it is (``what``: ``"image"``, ``"mask"``) and the fix.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "a.png"
    >>> Image.new("L", (4, 3)).save(path)
    >>> with open_image(path, "mask") as mask:
    ...     mask.size
    (4, 3)
    """
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {str(path)!r} is a folder, not an image file; put the {what} file there")
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it: refuse there too, before any pixel is decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{what} {str(path)!r} is too large to decode ({_one_line(exc)}); apkit reads images of "
                        f"at most {MAX_IMAGE_PIXELS:,} pixels: shrink the file") from exc
    except OSError as exc:
        raise DataError(f"cannot read {what} {str(path)!r} ({_one_line(exc)}); replace it with a readable "
                        "PNG or JPEG file") from exc
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise DataError(f"{what} {str(path)!r} is {width}x{height} pixels, more than apkit decodes "
                            f"({MAX_IMAGE_PIXELS:,}); shrink the file")
        yield image


def _one_line(exc: BaseException, limit: int = 160) -> str:
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def describe_missing(path: str | os.PathLike, what: str) -> str:
    """``"'P' is missing"`` or ``"'P' is a folder, not a file"``: what stands where ``what`` should be.

    Examples
    --------
    >>> describe_missing("/", "classes.txt")
    "classes.txt '/' is a folder, not a file"
    """
    path = Path(path)
    if path.is_dir():
        return f"{what} {str(path)!r} is a folder, not a file"
    return f"{what} {str(path)!r} is missing"
