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
