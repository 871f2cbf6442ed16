"""compress_checkpoint: everything that needs neither the teacher nor the data is checked first."""

import pytest

from apkit.compression import compress_checkpoint
from apkit.core.errors import UnknownNameError, ValidationError


def test_run_options_and_settings_are_checked_before_any_file_is_read(tmp_path):
    missing = tmp_path / "no-such.pt"
    with pytest.raises(UnknownNameError, match="unknown option of compress_checkpoint 'devise'; did you mean device"):
        compress_checkpoint(missing, "kd", out_dir=tmp_path / "out", devise="cpu")
    with pytest.raises(ValidationError, match="unknown kd setting 'pruning_ratio'"):
        compress_checkpoint(missing, "kd", out_dir=tmp_path / "out", options={"pruning_ratio": 0.5})
    with pytest.raises(ValidationError, match="seed must be >= 0"):
        compress_checkpoint(missing, "kd", out_dir=tmp_path / "out", seed=-1)
    assert not (tmp_path / "out").exists()
