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


def test_interrupted_bench_resumes_to_identical_results(tmp_path):
    reference = run_bench("smoke", out_dir=tmp_path / "reference", overrides=TINY, progress=False)
    assert (tmp_path / "reference" / "tables.md").read_text().count("| Naive |") == 3
    assert (tmp_path / "reference" / "figures" / "maps.png").stat().st_size > 0
    assert (tmp_path / "reference" / "figures" / "roar.png").stat().st_size > 0

    # Kill a run with SIGKILL in the middle of a compression's training, then start it again.
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "apkit.cli", "bench", "--profile", "smoke", "--out", str(out), "--quiet",
               "--device", "cpu", *[a for item in TINY for a in ("--set", item)]]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    marker = out / "stages" / "kd-ewa.json"
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "results.json").exists()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((out / "results.json").read_text())
    assert _numbers(resumed) == _numbers(json.loads(json.dumps(reference)))


def test_bench_refuses_to_mix_settings_in_one_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"profile": "smoke", "seed": 1}))
    with pytest.raises(ValidationError, match="other settings"):
        run_bench("smoke", out_dir=out, overrides=TINY, progress=False)
    assert Path(out / "settings.json").exists()
