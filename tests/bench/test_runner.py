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

from apkit.bench.runner import run_bench
from apkit.core.errors import ValidationError

# A grid small enough for the test suite: every stage runs, on tiny data.
TINY = [
    "data.sizes.train=160", "data.sizes.val=40", "data.sizes.seg=24",
    "teachers.teacher.train.epochs=2", "compressions.kd.epochs=1",
    "evaluation.attribution_methods=[\"gradcam\",\"excitation\"]", "evaluation.batch_size=24",
    "roar.train_size=64", "roar.test_size=24", "figures.examples=2",
]


def _numbers(results: dict) -> dict:
    """results.json without what legitimately differs between two runs (timings, paths)."""
    drop = {"seconds", "wall_seconds", "compute_seconds", "timings", "figures", "timings_s", "latency"}

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in drop and "time" not in k}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(results)


def test_voc_profile_without_data_root_says_what_to_download(tmp_path):
    from apkit.core.errors import DataError

    with pytest.raises(DataError, match="VOC"):
        run_bench("voc", out_dir=tmp_path / "out", progress=False)


def _differences(a, b, path: str = "") -> list[str]:
    """Paths at which two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "apkit.cli", "bench", "--profile", "smoke", "--out", str(out), "--quiet",
            "--device", "cpu", *[a for item in TINY for a in ("--set", item)]]


@pytest.mark.slow
def test_interrupted_bench_resumes_to_identical_results(tmp_path):
    # Both runs in fresh processes with the same environment, so that only the interruption differs.
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    reference_dir = tmp_path / "reference"
    done = subprocess.run(_command(reference_dir), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    tables = (reference_dir / "tables.md").read_text()
    # Four main tables and four faithfulness tables, one row each: KD, structured, unstructured, 2-bit QAT.
    assert tables.count("| Naive |") == 8 and "## Faithfulness" in tables
    assert "## Verdict: each regularizer against Naive" in tables
    reference = json.loads((reference_dir / "results.json").read_text())
    # Three regularizers for each of the three paper compressions, SWA alone for QAT.
    assert reference["seeds"] == [0, 1] and len(reference["verdict"]) == 10
    assert reference["verdict"]["qat-2bit-swa"]["seeds"] == [0, 1]
    quantization = reference["models"]["qat-2bit-swa-s0"]["quantization"]
    assert quantization["bits"] == 2 and quantization["twin"]["top1_agreement"] == 1.0
    assert all(v["sentence"].endswith(".") and len(v["differences"]["auc"]["values"]) == 2
               for v in reference["verdict"].values())
    assert (reference_dir / "figures" / "maps.png").stat().st_size > 0
    assert (reference_dir / "figures" / "roar.png").stat().st_size > 0

    # Kill a run with SIGKILL once a few stages are done, in the middle of the next one; start it again.
    out = tmp_path / "interrupted"
    process = subprocess.Popen(_command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    marker = out / "stages" / "kd-ewa-s0.json"
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
    differences = _differences(_numbers(resumed), _numbers(reference))
    assert not differences, differences[:10]


def test_bench_refuses_to_mix_settings_in_one_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"profile": "smoke", "seed": 1}))
    with pytest.raises(ValidationError, match="other settings"):
        run_bench("smoke", out_dir=out, overrides=TINY, progress=False)
    assert Path(out / "settings.json").exists()


def _tiny_voc(root: Path, count: int = 8, size: int = 48) -> Path:
    """A VOC-shaped folder: random images, each with one or two objects and a matching class mask."""
    import numpy as np
    from PIL import Image

    from apkit.data.voc import VOC_CLASSES, voc_palette

    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationClass"):
        (base / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"img{i}" for i in range(count)]
    for i, name in enumerate(names):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        classes = [i % 20, (i + 7) % 20] if i % 2 else [i % 20]
        objects = "".join(f"<object><name>{VOC_CLASSES[c]}</name><difficult>0</difficult></object>" for c in classes)
        (base / "Annotations" / f"{name}.xml").write_text(f"<annotation>{objects}</annotation>")
        mask = np.zeros((size, size), dtype=np.uint8)
        for j, c in enumerate(classes):
            mask[8 + 16 * j:20 + 16 * j, 8:30] = c + 1
        png = Image.new("P", (size, size))
        png.putpalette(voc_palette().flatten().tolist())
        png.putdata(mask.flatten().tolist())
        png.save(base / "SegmentationClass" / f"{name}.png")
    (base / "ImageSets/Main/train.txt").write_text("\n".join(names[:6]) + "\n")
    (base / "ImageSets/Main/val.txt").write_text("\n".join(names[6:]) + "\n")
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(names[4:]) + "\n")
    return root


@pytest.mark.slow
def test_voc_profile_runs_on_a_tiny_voc_folder(tmp_path):
    root = _tiny_voc(tmp_path / "data")
    overrides = [
        "data.image_size=64", 'teachers.teacher.options={"input_size": 64, "width_divisor": 8}',
        "teachers.teacher.train.epochs=1", "compressions.kd.epochs=1", "compressions.structured.epochs=1",
        "compressions.unstructured.epochs=1", "compressions.unstructured.steps=2",
        'evaluation.attribution_methods=["gradcam", "lrp"]', "evaluation.batch_size=4",
        'roar.classifier.options={"input_size": 64, "width_divisor": 8}', "roar.train.epochs=1",
        "roar.fractions=[0.5]", "figures.examples=2",
    ]
    results = run_bench("voc", out_dir=tmp_path / "out", data_root=root, device="cpu", overrides=overrides,
                        progress=False)
    assert results["settings"]["paper"] == "voc"
    assert set(results["models"]) == {"teacher"} | {f"{c}-{r}-s0" for c in ("kd", "structured", "unstructured")
                                                     for r in ("none", "ewa", "swa", "sswa")}
    # The paper's pipelines: /8 of the teacher's width for KD, 1 - 0.8^2 of the conv weights after 2 steps.
    assert results["models"]["unstructured-none-s0"]["weight_sparsity"] == pytest.approx(1 - 0.8 ** 2, abs=1e-3)
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert "(88.79)" in tables and "(80.21)" in tables  # the supplement's numbers beside ours
    assert (tmp_path / "out" / "figures" / "maps.png").stat().st_size > 0
