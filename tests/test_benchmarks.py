"""The benchmark runner works from a fresh copy of the sources, and every measurement agrees with its baseline."""

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
ROWS = {"synthetic", "metrics", "metrics-quantus", "metrics-npsort", "gradcam", "excitation", "lrp", "rap",
        "gradcam-captum", "gradcam-pgc", "lrp-zennit", "excitation-torchray", "regularizer-step",
        "regularizer-student", "audit", "deletion-quantus", "road-quantus", "road-pgc", "imputation-smooth-quantus",
        "randomization-quantus", "limit-resnet18-gradcam", "limit-resnet18-lrp", "limit-resnet18-excitation",
        "limit-resnet18-rap", "lrp-zennit-resnet18"}
# Rows whose baseline is an optional peer (the .[bench] extra): without it the row says "not installed".
PEER_MODULES = {"metrics-quantus": "quantus", "gradcam-pgc": "pytorch_grad_cam", "lrp-zennit": "zennit",
                "excitation-torchray": "torchray", "deletion-quantus": "quantus", "road-quantus": "quantus",
                "road-pgc": "pytorch_grad_cam", "randomization-quantus": "quantus", "lrp-zennit-resnet18": "zennit"}


@pytest.fixture
def runner():
    """benchmarks/run.py as a module (it imports its sibling scripts by their plain names)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("run")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _results(out: Path) -> dict:
    return json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_the_runner_works_from_a_fresh_copy(tmp_path):
    # Only the source folders, without caches, run from another folder: what a fresh clone has.  The
    # runner imports every benchmark script at start, so one cheap benchmark shows that all of them load.
    clone = tmp_path / "clone"
    for folder in ("apkit", "benchmarks"):
        shutil.copytree(ROOT / folder, clone / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "results" / "table.md"
    command = [sys.executable, str(clone / "benchmarks" / "run.py"), "--smoke", "--only", "synthetic",
               "--device", "cpu", "--threads", "1", "--out", str(out)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Machine: ") and "cores" in done.stdout and "torch " in done.stdout
    data = _results(out)
    assert [row["name"] for row in data["results"]] == ["synthetic"] and data["results"][0]["equal"] is True
    assert Path(data["machine"]["apkit_source"]) == clone / "apkit"  # the copy's code was measured
    assert "| synthetic |" in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in out.parent.iterdir()) == ["table.json", "table.md"]  # no temporary file left


@pytest.mark.slow
def test_every_measurement_runs_and_agrees_with_its_baseline(runner, tmp_path):
    out = tmp_path / "table.md"
    threads = torch.get_num_threads()
    try:
        # One thread: tiny models run faster so, above all on a machine that other jobs share.
        assert runner.main(["--smoke", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    data = _results(out)
    rows = {row["name"]: row for row in data["results"]}
    assert set(rows) == ROWS
    machine = data["machine"]
    assert data["size"] == "smoke" and machine["device"] == "cpu" and machine["cpu_cores"] >= 1
    assert machine["torch_threads"] == 1 and machine["torch"] == torch.__version__
    for name, row in rows.items():
        if name in PEER_MODULES and importlib.util.find_spec(PEER_MODULES[name]) is None:
            assert row["skipped"] and "not installed" in row["check"]
            continue
        assert not row["skipped"] and row["equal"] is True, (name, row["check"])
        assert row["apkit_s"] > 0 and row["device"] == "cpu"
        if name != "synthetic":  # the only row without a baseline
            assert row["baseline_s"] > 0 and row["ratio"] == pytest.approx(row["baseline_s"] / row["apkit_s"])
        if sys.platform.startswith("linux"):  # peak memory is measured on Linux
            assert row["apkit_peak"] is not None
    table = out.read_text(encoding="utf-8")
    assert all(f"| {name} |" in table for name in ROWS)
    assert "**NO**" not in table and "VmHWM" in table  # the peak-memory footnote
    assert rows["metrics-npsort"]["ratio"] < 10  # a bound: apkit cannot be far faster than sorting the pixels
    # The limit table: each method's time over the forward + backward pass, the inverse of the row's ratio.
    assert "time over one forward + backward pass" in table and "| resnet18 |" in table
    for method in ("gradcam", "lrp", "excitation", "rap"):
        row = rows[f"limit-resnet18-{method}"]
        assert row["extra"]["over_limit"] == pytest.approx(1 / row["ratio"])


def test_bad_arguments_are_refused(runner, capsys):
    for argv, message in ((["--only", "nope"], "unknown benchmark(s) nope; known: synthetic, metrics"),
                          (["--device", "tpu"], "device 'tpu' is not supported"),
                          (["--out", "table.json"], "--out names the Markdown file"),
                          (["--quick", "--smoke"], "not allowed with"),
                          (["--threads", "-1"], "--threads must be 0")):
        with pytest.raises(SystemExit) as exit_info:
            runner.main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_the_audit_float64_recheck_excuses_rounding_but_not_a_batching_error(runner, monkeypatch):
    """A row beyond tolerance passes only when batched and per-pair maps agree in float64."""
    import bench_audit

    from apkit import models
    from apkit.data import SyntheticShapes

    dataset = SyntheticShapes("seg", num_samples=3, image_size=64)
    torch.manual_seed(0)
    net = models.create("vgg_small", num_classes=dataset.num_classes).eval()
    kept = {(0, 1): None, (1, 2): None, (2, 0): None, (2, 3): None}  # the rows' kept (image, class) pairs
    scores = {("student", "lrp"): kept}
    equal, note = bench_audit.float64_recheck([("student", "lrp")], {"student": net}, dataset, scores, 2)
    assert equal and "student/lrp recomputed in float64" in note

    explain = bench_audit.apkit.explain

    def batched_wrongly(model, images, pairs, **options):  # a batch of two images gets a wrong map
        maps = explain(model, images, pairs, **options)
        return maps * 1.01 if len(images) > 1 else maps

    monkeypatch.setattr(bench_audit.apkit, "explain", batched_wrongly)
    equal, note = bench_audit.float64_recheck([("student", "lrp")], {"student": net}, dataset, scores, 2)
    assert not equal
