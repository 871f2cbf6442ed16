"""Atomic writes: the file is whole or absent, and a failed write leaves the old file as it was."""

import json
import math
import os

import pytest

from apkit.core.errors import ValidationError
from apkit.core.io import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    check_out_dir,
    check_writable,
    read_json,
)


def test_text_and_json_round_trip(tmp_path):
    path = atomic_write_text(tmp_path / "deep" / "er" / "a.txt", "hello\n")  # folders are created
    assert path.read_text(encoding="utf-8") == "hello\n"
    data = {"a": 1.5, "b": [1, float("nan")], "c": {"d": math.inf}, 3: "three"}
    atomic_write_json(tmp_path / "r.json", data)
    assert read_json(tmp_path / "r.json") == {"a": 1.5, "b": [1, None], "c": {"d": None}, "3": "three"}
    json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))  # strict JSON: no NaN


def test_binary_write_and_no_temporary_file_left(tmp_path):
    atomic_write(tmp_path / "b.bin", lambda handle: handle.write(b"\x00\x01"), binary=True)
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]


def test_the_written_file_is_as_readable_as_any_file(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "m.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "m.txt").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = atomic_write_text(tmp_path / "r.txt", "old")

    def half_then_fail(handle):
        handle.write("new, but only half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(path, half_then_fail)
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_an_interrupted_first_write_leaves_no_file(tmp_path):
    def interrupted(handle):
        handle.write("x")
        raise KeyboardInterrupt  # not an Exception: the temporary file must still go

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "never.txt", interrupted)
    assert not list(tmp_path.iterdir())


def test_operating_system_errors_name_the_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValidationError, match=r"cannot write .*file.*; pick another output folder"):
        atomic_write_text(tmp_path / "file" / "under.txt", "x")  # a file where a folder should be


def test_check_writable(tmp_path):
    assert check_writable(tmp_path) == tmp_path
    missing = tmp_path / "new" / "deeper"
    assert check_writable(missing) == missing and not missing.exists()  # not created
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the checks leave nothing behind
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValidationError, match="is a file; pick another output folder"):
        check_writable(tmp_path / "f")
    with pytest.raises(ValidationError, match="a file; pick another output folder"):
        check_writable(tmp_path / "f" / "sub")


def _check(folder, **flags):
    return check_out_dir(folder, finished=lambda f: (f / "done.json").is_file(), holds="a finished run",
                         reuse="reuse it", redo="redo it", **{"resume": False, "overwrite": False, **flags})


def test_a_finished_run_is_kept_unless_asked(tmp_path):
    assert _check(tmp_path / "new") == tmp_path / "new" and not (tmp_path / "new").exists()
    (tmp_path / "done.json").write_text("{}")
    with pytest.raises(ValidationError, match="already holds a finished run; pass resume=True .* to reuse it, "
                                              r"overwrite=True \(--overwrite\) to redo it"):
        _check(tmp_path)
    assert _check(tmp_path, resume=True) == tmp_path == _check(tmp_path, overwrite=True)


def test_contradictory_or_incomplete_flags_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="exclude each other"):
        _check(tmp_path, resume=True, overwrite=True)
    with pytest.raises(ValidationError, match="resume=True needs out_dir"):
        _check(None, resume=True)
    assert _check(None) is None


# ------------------------------------------------------------------------------------------- report sets

def _write_set(texts, figures=None):
    from pathlib import Path

    def write(stage: Path):
        names = {}
        for name, text in texts.items():
            (stage / name).write_text(text, encoding="utf-8")
            names[name] = name
        if figures is not None:
            (stage / "figures").mkdir()
            (stage / "figures" / "f.png").write_text(figures, encoding="utf-8")
            names["figures"] = "figures"
        return names
    return write


def _contents(folder):
    return {str(p.relative_to(folder)): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_set_replaces_the_old_one_whole(tmp_path):
    from apkit.core.io import atomic_write_set

    atomic_write_set(tmp_path, _write_set({"a.md": "old", "b.csv": "old"}, figures="old"))
    (tmp_path / "figures" / "stale.png").write_text("from an older run", encoding="utf-8")
    paths = atomic_write_set(tmp_path, _write_set({"a.md": "new", "b.csv": "new"}, figures="new"))
    assert paths == {"a.md": tmp_path / "a.md", "b.csv": tmp_path / "b.csv", "figures": tmp_path / "figures"}
    # figures/ is replaced, not merged: the older run's figure is gone
    assert _contents(tmp_path) == {"a.md": "new", "b.csv": "new", "figures/f.png": "new"}
    assert sorted(os.listdir(tmp_path)) == ["a.md", "b.csv", "figures"]


def test_a_set_drops_the_entries_it_replaces_when_the_new_one_lacks_them(tmp_path):
    from apkit.core.io import atomic_write_set

    atomic_write_set(tmp_path, _write_set({"a.md": "old"}, figures="old"))
    atomic_write_set(tmp_path, _write_set({"a.md": "new"}), replaces=("figures",))
    assert _contents(tmp_path) == {"a.md": "new"}


def test_a_failed_set_leaves_the_old_one_and_nothing_else(tmp_path):
    from apkit.core.io import atomic_write_set

    atomic_write_set(tmp_path, _write_set({"a.md": "old", "b.csv": "old"}))

    def write(stage):
        (stage / "a.md").write_text("new", encoding="utf-8")
        raise OSError(28, "No space left on device")

    with pytest.raises(ValidationError, match="No space left on device.*free on its disk"):
        atomic_write_set(tmp_path, write)
    assert _contents(tmp_path) == {"a.md": "old", "b.csv": "old"}
    assert sorted(os.listdir(tmp_path)) == ["a.md", "b.csv"]


def test_a_set_killed_during_its_swap_is_finished_by_the_next_write(tmp_path):
    """A process killed between two renames leaves its complete staging folder: the next write finishes it first,
    and removes unfinished staging folders and stray temporary files."""
    from apkit.core.io import _SET_DONE, _SET_PREFIX, atomic_write_set, recover_sets

    atomic_write_set(tmp_path, _write_set({"report.md": "old", "report.csv": "old"}))
    staging = tmp_path / f"{_SET_PREFIX}killed"
    staging.mkdir()
    (staging / "report.csv").write_text("killed run", encoding="utf-8")  # report.md was already swapped in:
    (tmp_path / "report.md").write_text("killed run", encoding="utf-8")
    (staging / _SET_DONE).write_text("", encoding="utf-8")
    (tmp_path / f"{_SET_PREFIX}unfinished").mkdir()
    (tmp_path / ".report.csv.abc123.tmp").write_text("half", encoding="utf-8")
    recover_sets(tmp_path)
    assert _contents(tmp_path) == {"report.csv": "killed run", "report.md": "killed run"}
    assert sorted(os.listdir(tmp_path)) == ["report.csv", "report.md"]
    atomic_write_set(tmp_path, _write_set({"report.md": "new", "report.csv": "new"}))
    assert _contents(tmp_path) == {"report.csv": "new", "report.md": "new"}


# ------------------------------------------------------------------------------------------- full disks

def test_torch_save_on_a_full_disk_is_an_apkit_error(tmp_path, monkeypatch):
    """torch.save reports a short write as RuntimeError ('unexpected pos'), not OSError: caught, cleaned, named."""
    import torch

    from apkit.models.checkpoint import atomic_save

    def short_write(obj, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:783] . unexpected pos 1715392 vs 1715280")

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(ValidationError, match=r"cannot write '.*model\.pt' \(.*unexpected pos.*free on its disk\)"):
        atomic_save({"a": 1}, tmp_path / "model.pt")
    assert os.listdir(tmp_path) == []


def test_other_runtime_errors_pass_through(tmp_path):
    def broken(handle):
        raise RuntimeError("size mismatch")

    with pytest.raises(RuntimeError, match="size mismatch"):
        atomic_write(tmp_path / "x", broken)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------ images

def test_open_image_refuses_a_decompression_bomb_from_its_header(tmp_path):
    import struct
    import zlib

    from apkit.core.errors import DataError
    from apkit.core.io import open_image

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "bomb.png"
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(DataError, match=r"mask '.*bomb\.png' is too large to decode.*shrink the file"):
        with open_image(path, "mask"):
            pass
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(DataError, match="is a folder, not an image file"):
        with open_image(tmp_path / "folder.png"):
            pass
    (tmp_path / "text.png").write_text("not an image", encoding="utf-8")
    with pytest.raises(DataError, match="cannot read image"):
        with open_image(tmp_path / "text.png"):
            pass
