"""A run folder belongs to one run: its identity is recorded in it and checked before any work.

``apkit train``, ``compress``, ``audit`` and ``bench`` write into a folder that is empty, or that
holds the same kind of run with the same settings and the same inputs.  The identity is the file
:data:`RUN_FILE` in the folder::

    {"kind": "compress",
     "settings": {"method": "kd", "epochs": 2, ...},          # the options that shape the result
     "inputs": {"teacher": "sha256:9f2c...", "data": "synthetic"},
     "apkit_version": "..."}

Inputs that are files (a teacher's or student's weights) are recorded by the SHA-256 of their
bytes, so a teacher replaced under the same name counts as another input; a data spec is recorded
as written.  :func:`claim_run_folder` refuses, before any work:

* a folder holding another kind of run, other settings or other inputs, or files of no recorded
  run (someone's ``model.pt``), unless ``overwrite``;
* an interrupted run (a checkpoint but no finished result) unless ``resume`` or ``overwrite``;
* ``resume`` with changed inputs or settings (``resumable`` settings, such as a longer training,
  may change).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apkit.core.errors import ApkitError, ValidationError
from apkit.core.io import atomic_write_json, check_writable, read_json
from apkit.core.version import __version__

__all__ = ["RUN_FILE", "RunKind", "claim_run_folder", "file_identity", "run_folder"]

#: The file that records which run a folder belongs to.
RUN_FILE = "run.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RunKind:
    """What one kind of run leaves in its folder.

    Attributes
    ----------
    name : str
        ``"train"``, ``"compress"``, ``"audit"`` or ``"bench"``.
    finished : tuple of str
        Files (glob patterns) whose presence means the run finished.
    checkpoints : tuple of str
        Files (glob patterns) an interrupted run leaves, to be continued with ``--resume``.
    own : tuple of str
        Files (glob patterns) this kind writes: a folder of an unrecorded run holding only these
        is taken for a run of this kind made before run folders were recorded.
    continues : bool
        Whether rerunning the same command continues an interrupted run without ``--resume``
        (the benchmark keys its stages).
    """

    name: str
    finished: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()
    own: tuple[str, ...] = ()
    continues: bool = False


#: What a benchmark folder holds.
BENCH_ENTRIES = ("settings.json", "models", "stages", "pairs", "roar-cache", "results.json", "tables.md", "figures")

KINDS = {
    "train": RunKind("train", finished=("metrics.json",), checkpoints=("training/checkpoint.pt",),
                     own=("model.pt", "metrics.json", "training")),
    "compress": RunKind("compress", finished=("record.json",),
                        checkpoints=("*/checkpoint.pt", "unstructured_progress.pt"),
                        own=("model.pt", "model_state.pt", "record.json", "unstructured_progress.pt", "train",
                             "step*")),
    # An audit's report is cheap to remake but may be someone's only copy: an unrecorded one is refused.
    "audit": RunKind("audit", finished=("report.json",)),
    # A benchmark keys its stages by its settings.json: rerunning the same command continues it.
    "bench": RunKind("bench", finished=("results.json",), checkpoints=("settings.json",), own=BENCH_ENTRIES,
                     continues=True),
}


def file_identity(path: str | os.PathLike) -> str:
    """``"sha256:HEX"`` of a file's bytes; ``"missing:PATH"`` when there is no such file (it is refused later).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "w.pt"
    >>> _ = path.write_bytes(b"abc")
    >>> file_identity(path)[:20]
    'sha256:ba7816bf8f01c'
    """
    path = Path(path)
    if not path.is_file():
        return f"missing:{path}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so a recorded identity compares equal to a fresh one."""
    return json.loads(json.dumps(value, default=str))


def _matches(folder: Path, patterns: Sequence[str]) -> list[str]:
    return sorted({str(p.relative_to(folder)) for pattern in patterns for p in folder.glob(pattern)})


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def _changes(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    keys = [k for k in dict.fromkeys([*old, *new]) if k not in ignore and old.get(k) != new.get(k)]
    return [f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_HOW = "pass --overwrite to replace it, or another --out"


def claim_run_folder(out_dir: str | os.PathLike, kind: str, *, settings: Mapping[str, Any],
                     inputs: Mapping[str, Any], resume: bool = False, overwrite: bool = False,
                     resumable: Sequence[str] = ()) -> tuple[Path, dict[str, Any]]:
    """Check, before any work, that ``out_dir`` may receive this run; return it and the identity to record.

    Parameters
    ----------
    out_dir : path
        The run's folder.
    kind : str
        A key of :data:`KINDS`.
    settings, inputs : mapping
        The options that shape the result, and the identity of the inputs (``file_identity`` of
        weights files, data specs as written): plain JSON data.
    resume, overwrite : bool
        Continue an interrupted (or reuse a finished) run; replace whatever the folder holds.
    resumable : sequence of str
        Settings that may change on ``resume`` (a longer training).

    Raises
    ------
    ValidationError
        The folder holds something else, an interrupted run without ``resume``, or changed inputs
        with ``resume``; the message names what differs and the flag that settles it.
    """
    if resume and overwrite:
        raise ValidationError("resume and overwrite exclude each other: --resume continues the run in --out, "
                              "--overwrite replaces it; pass one of them")
    out = check_writable(out_dir)
    run = KINDS[kind]
    identity = {"kind": kind, "settings": _plain(dict(settings)), "inputs": _plain(dict(inputs)),
                "apkit_version": __version__}
    if overwrite or not _listing(out):
        return out, identity
    recorded = _recorded(out)
    if recorded is None:
        _check_unrecorded(out, run, resume)
    else:
        _check_recorded(out, run, recorded, identity, resume=resume, resumable=resumable)
    if not (resume or run.continues) and _matches(out, run.checkpoints) and not _matches(out, run.finished):
        shown = ", ".join(_matches(out, run.checkpoints)[:2])
        raise ValidationError(f"{str(out)!r} holds an interrupted {kind} run ({shown}); pass --resume to continue "
                              "it, --overwrite to start afresh over it, or another --out")
    return out, identity


def _recorded(out: Path) -> dict[str, Any] | None:
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        recorded = read_json(path)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"the run record {str(path)!r} is unreadable ({type(exc).__name__}); "
                              f"{_HOW}") from exc
    if not isinstance(recorded, dict) or "kind" not in recorded:
        raise ValidationError(f"the run record {str(path)!r} is not one apkit wrote; {_HOW}")
    return recorded


def _check_unrecorded(out: Path, run: RunKind, resume: bool) -> None:
    """A folder with files but no run record: accepted only when it holds this kind's own files."""
    listing = _listing(out)
    foreign = [name for name in listing if not any(Path(name).match(pattern) for pattern in run.own)]
    if foreign or not _matches(out, run.finished + run.checkpoints):
        shown = ", ".join((foreign or listing)[:4]) + (", ..." if len(foreign or listing) > 4 else "")
        raise ValidationError(f"{str(out)!r} already holds files that are not an apkit {run.name} run ({shown}); "
                              f"{_HOW} (its content would be lost)")


def _check_recorded(out: Path, run: RunKind, recorded: dict[str, Any], identity: dict[str, Any], *,
                    resume: bool, resumable: Sequence[str]) -> None:
    if recorded.get("kind") != run.name:
        raise ValidationError(f"{str(out)!r} holds an apkit {recorded.get('kind')} run, not a {run.name} run: "
                              f"writing there would replace its files; {_HOW}")
    inputs = _changes(recorded.get("inputs", {}), identity["inputs"])
    settings = _changes(recorded.get("settings", {}), identity["settings"], resumable if resume else ())
    if not (inputs or settings):
        return
    what = "inputs changed" if inputs else "settings changed"
    changed = "; ".join([*inputs, *settings][:4])
    if resume:
        raise ValidationError(f"cannot resume {str(out)!r}: {what} ({changed}); use the same ones, another --out, "
                              "or --overwrite (instead of --resume) to start afresh")
    raise ValidationError(f"{str(out)!r} holds a {run.name} run with other {what.split()[0]} ({changed}); "
                          f"{_HOW}")


@contextlib.contextmanager
def run_folder(out_dir: str | os.PathLike, kind: str, *, settings: Mapping[str, Any], inputs: Mapping[str, Any],
               resume: bool = False, overwrite: bool = False, resumable: Sequence[str] = ()) -> Iterator[Path]:
    """:func:`claim_run_folder`, then record the run in the folder for the time of the ``with`` block.

    If the block raises an apkit error (a refusal, a full disk), a record that was not there
    before is removed again, and so is a folder the run created and left empty: a refused run
    leaves nothing behind.  An interrupted run (Ctrl-C, a kill) keeps its record, to be resumed.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "run"
    >>> with run_folder(out, "audit", settings={"methods": ["gradcam"]}, inputs={"data": "synthetic"}):
    ...     _ = (out / "report.json").write_text("{}")
    >>> read_json(out / RUN_FILE)["kind"]
    'audit'
    """
    out, identity = claim_run_folder(out_dir, kind, settings=settings, inputs=inputs, resume=resume,
                                     overwrite=overwrite, resumable=resumable)
    existed = out.exists()
    recorded_before = (out / RUN_FILE).is_file()
    atomic_write_json(out / RUN_FILE, identity)
    try:
        yield out
    except ApkitError:
        # A refused run leaves the folder as it found it: no record where there was none, no new empty folder.
        if not recorded_before:
            (out / RUN_FILE).unlink(missing_ok=True)
        if not existed and not _listing(out):
            shutil.rmtree(out, ignore_errors=True)
        raise
