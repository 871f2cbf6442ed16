"""Old spellings that the documentation used keep working for one release, each with a DeprecationWarning."""

import pytest
import torch

import apkit
from apkit import attribution, metrics
from apkit.cli import main
from apkit.compression import CompressionRecord, compress, default_settings
from apkit.errors import ValidationError
from apkit.evaluation import audit as new_audit
from apkit.evaluation import localization_scores, plot_roar, roar
from apkit.regularizers import AttributionMatchingLoss


def test_regularizer_kind_and_weight_names():
    with pytest.warns(DeprecationWarning, match="regularizer="):
        loss = AttributionMatchingLoss(kind="sswa", weight=10.0)
    assert loss.regularizer == "sswa" and loss.weight == 10.0
    with pytest.warns(DeprecationWarning, match="regularizer"):
        assert loss.kind == "sswa"
    with pytest.warns(DeprecationWarning, match="weight"):
        assert default_settings("kd", "quick", reg_weight=7.0).weight == 7.0


def test_compress_and_audit_keywords():
    with pytest.warns(DeprecationWarning, match="regularizer="), pytest.raises(ValidationError, match="teacher"):
        compress("not a model", "kd", reg="swa", train_set=[])
    with pytest.warns(DeprecationWarning, match="attribution_methods="), \
            pytest.raises(ValidationError, match="teacher"):
        apkit.audit("not a model", {}, [], methods=["gradcam"])
    with pytest.warns(DeprecationWarning, match="tolerances="), pytest.raises(ValidationError, match="teacher"):
        apkit.audit("not a model", {}, [], tolerance=3)


def test_moved_names():
    with pytest.warns(DeprecationWarning, match="ATTRIBUTION_METHODS"):
        assert attribution.METHODS is attribution.ATTRIBUTION_METHODS
    with pytest.warns(DeprecationWarning, match="apkit.evaluation"):
        assert metrics.localization_scores is localization_scores
    with pytest.warns(DeprecationWarning):
        assert metrics.roar is roar and metrics.plot_roar is plot_roar
    with pytest.warns(DeprecationWarning, match="apkit.evaluation.audit_model"):
        from apkit.audit import audit_model  # noqa: F401
    assert apkit.audit is new_audit  # the function, not the old module


def test_record_items():
    record = CompressionRecord(method="kd", regularizer="none", seed=0, task="multilabel", device="cpu",
                               apkit_version=apkit.__version__, settings={}, architecture=None, params=10,
                               nonzero_params=5, macs=1, sparsity=0.5, weight_sparsity=0.5, compression_ratio=2.0,
                               teacher={"params": 10, "macs": 1})
    with pytest.warns(DeprecationWarning, match="record.params|CompressionRecord.params"):
        assert record["params"] == 10
    with pytest.raises(KeyError):
        record["nope"]
    assert "steps" not in record.to_dict() and record.to_dict()["params"] == 10


def test_cli_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compress", "--teacher", str(tmp_path / "missing.pt"), "--reg", "swa", "--reg-weight", "5",
              "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "--reg is deprecated" in err and "--reg-weight is deprecated" in err and "does not exist" in err
    with pytest.raises(SystemExit):
        main(["audit", "--teacher", str(tmp_path / "missing.pt"), "--student", "x.pt", "--tolerance", "3"])
    assert "--tolerance is deprecated" in capsys.readouterr().err
    assert torch.is_tensor(torch.zeros(1))  # the CLI left the process usable
