"""The benchmark grid: profiles, an interrupted run that resumes to identical results, the VOC profile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apkit.bench import PROFILES, resolve_profile
from apkit.bench.runner import run_bench
from apkit.errors import UnknownNameError, ValidationError

# A grid small enough for the test suite: every stage runs, on tiny data.
TINY = [
    "data.sizes.train=160", "data.sizes.val=40", "data.sizes.seg=24",
    "teachers.teacher.train.epochs=2", "compressions.kd.epochs=1",
    "evaluation.methods=[\"gradcam\",\"excitation\"]", "evaluation.batch_size=24",
    "roar.train_size=64", "roar.test_size=24", "figures.examples=2",
]


def _numbers(results: dict) -> dict:
    """results.json without what legitimately differs between two runs (timings, paths)."""
    drop = {"seconds", "wall_seconds", "timings", "figures", "timings_s"}

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in drop and "time" not in k}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(results)


def test_profiles_are_registered_and_overridable():
    assert PROFILES.names() == ["smoke", "default", "voc", "imagenet"]
    settings = resolve_profile("voc", ["compressions.kd.epochs=2", "evaluation.methods=[\"lrp\"]"])
    assert settings["compressions"]["kd"]["epochs"] == 2
    assert settings["evaluation"]["methods"] == ["lrp"]
    assert resolve_profile("voc")["compressions"]["structured"]["epochs"] == 60  # supplement C.2
    with pytest.raises(ValidationError, match="not a setting"):
        resolve_profile("smoke", ["teachers.teacher.train.epoch=3"])
    with pytest.raises(ValidationError, match="a.b=value"):
        resolve_profile("smoke", ["epochs"])
    with pytest.raises(UnknownNameError, match="smoke"):
        resolve_profile("nope")


def test_voc_profile_without_data_root_says_what_to_download(tmp_path):
    from apkit.errors import DataError

    with pytest.raises(DataError, match="VOC"):
        run_bench("voc", out_dir=tmp_path / "out", progress=False)


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "apkit.cli", "bench", "--profile", "smoke", "--out", str(out), "--quiet",
            "--device", "cpu", *[a for item in TINY for a in ("--set", item)]]


def test_interrupted_bench_resumes_to_identical_results(tmp_path):
    # Both runs in fresh processes with the same environment, so that only the interruption differs.
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    reference_dir = tmp_path / "reference"
    done = subprocess.run(_command(reference_dir), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (reference_dir / "tables.md").read_text().count("| Naive |") == 3
    assert (reference_dir / "figures" / "maps.png").stat().st_size > 0
    assert (reference_dir / "figures" / "roar.png").stat().st_size > 0

    # Kill a run with SIGKILL once a few stages are done, in the middle of the next one; start it again.
    out = tmp_path / "interrupted"
    process = subprocess.Popen(_command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    marker = out / "stages" / "kd-ewa.json"
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "results.json").exists()
    done = subprocess.run(_command(out), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((out / "results.json").read_text())
    reference = json.loads((reference_dir / "results.json").read_text())
    assert _numbers(resumed) == _numbers(reference)


def test_bench_refuses_to_mix_settings_in_one_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"profile": "smoke", "seed": 1}))
    with pytest.raises(ValidationError, match="other settings"):
        run_bench("smoke", out_dir=out, overrides=TINY, progress=False)
    assert Path(out / "settings.json").exists()
