"""`apkit audit` launched by torchrun with two CPU processes: one process writes, and the report is the
single-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from apkit import models

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def _checkpoints(folder):
    paths = {}
    for name, seed in (("teacher", 0), ("student", 1)):
        torch.manual_seed(seed)
        net = models.create("vgg_small", num_classes=8, input_size=32, width_divisor=4)
        with torch.no_grad():
            net.classifier[-1].bias.fill_(1.0)  # predict most classes, so that most pairs are kept
        paths[name] = models.save_checkpoint(net, folder / f"{name}.pt")
    return paths


def _audit(paths, out, *, launcher):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [*launcher, "-m", "apkit.cli", "audit", "--teacher", str(paths["teacher"]),
               "--student", str(paths["student"]), "--data", "synthetic", "--samples", "12",
               "--methods", "gradcam,lrp", "--batch-size", "4", "--device", "cpu", "--quiet", "--out", str(out)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_torchrun_audit_equals_one_process_and_rank0_writes(tmp_path):
    paths = _checkpoints(tmp_path)
    _audit(paths, tmp_path / "single", launcher=[sys.executable])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = _audit(paths, tmp_path / "double", launcher=torchrun)

    written = sorted(p.name for p in (tmp_path / "double").iterdir())
    assert written == ["figures", "report.csv", "report.html", "report.json", "report.md"]  # no temporary file left
    assert double.stdout.count("wrote ") == 1  # one process reports
    one = json.loads((tmp_path / "single" / "report.json").read_text())
    two = json.loads((tmp_path / "double" / "report.json").read_text())
    assert two["predictive"].keys() == one["predictive"].keys()
    for model, metrics in one["predictive"].items():
        assert two["predictive"][model] == pytest.approx(metrics, rel=1e-6), model
    assert [r["kept"] for r in two["rows"]] == [r["kept"] for r in one["rows"]]
    for row_one, row_two in zip(one["rows"], two["rows"]):
        for column in ("auc", "pointing", "cos", "l2"):
            if row_one[column] is None:  # the teacher has no similarity to itself (NaN, written as null)
                assert row_two[column] is None, column
            else:
                assert row_two[column] == pytest.approx(row_one[column], rel=1e-5), column
    # The per-pair table comes back in dataset order, whole.
    for pairs_one, pairs_two in zip(one["pairs"], two["pairs"]):
        assert pairs_two["image"] == pairs_one["image"] and pairs_two["class"] == pairs_one["class"]
