"""The output-folder check every run makes before any work."""

import pytest

from apkit.core.errors import ValidationError
from apkit.core.io import check_out_dir


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
