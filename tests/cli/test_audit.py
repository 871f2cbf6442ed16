"""`apkit audit`: its release gates and exit status, and a run launched by torchrun with two CPU processes (one
process writes, and the report is the single-process one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from helpers import run_cli

from apkit import models

needs_distributed = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


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


@pytest.mark.slow
@needs_distributed
def test_torchrun_audit_equals_one_process_and_rank0_writes(tmp_path):
    paths = _checkpoints(tmp_path)
    _audit(paths, tmp_path / "single", launcher=[sys.executable])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = _audit(paths, tmp_path / "double", launcher=torchrun)

    written = sorted(p.name for p in (tmp_path / "double").iterdir())
    assert written == ["figures", "report.csv", "report.html", "report.json", "report.md", "run.json"]  # no .tmp left
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


def _gated(paths, out, capsys, *gates):
    """``apkit audit`` in this process with ``--fail-under`` gates; returns (exit code, stderr)."""
    args = ["audit", "--teacher", paths["teacher"], "--student", paths["student"], "--data", "synthetic",
            "--samples", "8", "--batch-size", "8", "--resamples", "50", "--device", "cpu", "--quiet", "--out", out]
    for gate in gates:
        args += ["--fail-under", gate]
    code, _, err = run_cli(args, capsys)
    return code, err


@pytest.mark.usefixtures("one_thread")
def test_failed_gates_exit_with_status_3_and_still_write_the_report(tmp_path, capsys):
    paths = _checkpoints(tmp_path)
    # An impossible similarity and an impossible drop: both gates fail, one line each, status 3.
    code, err = _gated(paths, tmp_path / "gated", capsys, "cos=1.01", "auc_drop=-1")
    failed = [line for line in err.splitlines() if line.startswith("apkit: gate")]
    assert code == 3 and len(failed) == 2 and "cos=1.01" in failed[0] and "auc_drop=-1" in failed[1]
    assert (tmp_path / "gated" / "report.json").exists()  # the report is written all the same
    page = (tmp_path / "gated" / "report.html").read_text(encoding="utf-8")
    verdict = page[page.index("id='verdict'"):page.index("</section>")]  # at the top, before every table
    assert "FAILED" in verdict and "cos=1.01" in verdict and "auc_drop=-1" in verdict and "<table" not in verdict
    assert page.index("id='verdict'") < page.index("<table")
    judged = json.loads((tmp_path / "gated" / "report.json").read_text())["verdict"]
    assert [row["passed"] for row in judged] == [False, False]
    # Generous gates pass.
    code, err = _gated(paths, tmp_path / "passed", capsys, "cos=-1", "map_drop=1")
    assert code == 0 and "apkit: gate" not in err


@pytest.mark.parametrize("gate,fragment", [("cos", "NAME=VALUE"), ("cosine=0.9", "unknown gate 'cosine'"),
                                           ("cos=high", "needs a number")])
def test_malformed_gates_are_refused_before_any_work(capsys, gate, fragment, tmp_path):
    code, _, err = run_cli(["audit", "--teacher", tmp_path / "absent.pt", "--student", "x.pt", "--fail-under", gate,
                            "--out", tmp_path / "never"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and fragment in err and "Traceback" not in err
    assert not (tmp_path / "never").exists()


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("gate,fragment", [("top1_drop=0.05", "no top1 \\(the data is multi-label\\)"),
                                           ("agreement=0.9", "no agreement")])
def test_a_gate_the_audit_cannot_judge_fails_in_seconds_before_any_work(tmp_path, capsys, gate, fragment):
    import re
    import time

    paths = _checkpoints(tmp_path)
    start = time.perf_counter()
    code, err = _gated(paths, tmp_path / "never", capsys, gate)
    elapsed = time.perf_counter() - start
    assert code == 1 and re.search(fragment, err) and "gates it can judge: cos, l2, auc_drop" in err
    assert elapsed < 20 and not (tmp_path / "never" / "report.json").exists()


@pytest.mark.usefixtures("one_thread")
def test_layer_option_is_used_and_recorded_and_faithfulness_can_be_turned_off(tmp_path, capsys):
    paths = _checkpoints(tmp_path)
    args = ["audit", "--teacher", paths["teacher"], "--student", paths["student"], "--data", "synthetic",
            "--samples", "6", "--batch-size", "6", "--resamples", "20", "--device", "cpu", "--quiet",
            "--layer", "gradcam=features.13", "--faithfulness", "none", "--out", tmp_path / "out"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["layers"] == {"teacher": {"gradcam": "features.13"}, "student": {"gradcam": "features.13"}}
    assert data["settings"]["layers"] == {"gradcam": "features.13"} and "faithfulness" not in data
    assert "features.13" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    for bad, fragment in (("gradcam", "METHOD=NAME"), ("gradcam=features.99", "unknown layer 'features.99'")):
        code, _, err = run_cli([*args[:-2], "--layer", bad, "--out", tmp_path / "bad"], capsys)
        assert code == 1 and fragment in err, err


@pytest.mark.usefixtures("one_thread")
def test_faithfulness_is_reported_with_its_gates(tmp_path, capsys):
    paths = _checkpoints(tmp_path)
    args = ["audit", "--teacher", paths["teacher"], "--student", paths["student"], "--data", "synthetic",
            "--samples", "6", "--batch-size", "6", "--resamples", "20", "--device", "cpu", "--quiet",
            "--faithfulness-steps", "4", "--fail-under", "deletion_rise=1", "--fail-under", "road_drop=-1",
            "--out", tmp_path / "out"]
    code, out, err = run_cli(args, capsys)
    assert code == 3 and "road_drop=-1" in err and "deletion_rise" not in err
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    entries = {(e["model"], e["method"]): e for e in data["faithfulness"]}
    assert set(entries) == {("teacher", "gradcam"), ("student", "gradcam")}
    assert len(entries[("student", "gradcam")]["deletion"]) == 6
    assert len(entries[("student", "gradcam")]["curves"]["insertion"]) == 5
    assert "Faithfulness" in out and "Δ deletion" in out
