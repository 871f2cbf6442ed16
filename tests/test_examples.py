"""The gallery: every example runs in fast mode (``APKIT_FAST=1``) and writes a real PNG figure."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# example -> the figure it writes under APKIT_EXAMPLES_OUT
FIGURES = {
    "plot_explain_methods.py": "explain_methods.png",
    "plot_audit_compressed.py": "audit_maps.png",
    "plot_distill_swa.py": "distill_swa.png",
    "plot_structured_pruning.py": "structured_pruning.png",
    "plot_metrics_own_maps.py": "metrics_own_maps.png",
    "plot_roar_curve.py": "roar_curve.png",
    "plot_own_resnet_folder.py": "own_resnet_folder.png",
    "plot_compress_own_model.py": "compress_own_model.png",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RUNS: dict[str, subprocess.CompletedProcess] = {}  # finished runs, by example


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """One output folder for all examples: the first one trains the small teacher, the others load it."""
    return tmp_path_factory.mktemp("examples-out")


def run_example(name: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "APKIT_FAST": "1", "APKIT_EXAMPLES_OUT": str(out), "MPLBACKEND": "Agg"}
    # The examples are small: one thread each avoids oversubscribing a busy 2-core machine.
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], env=env, cwd=out, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    _RUNS[name] = proc
    return proc


def check_figure(path: Path) -> None:
    """A decodable PNG of a reasonable size that is not blank."""
    from matplotlib.image import imread

    assert path.is_file(), f"{path.name} was not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = np.asarray(imread(path))[..., :3]
    height, width = pixels.shape[:2]
    assert height >= 150 and width >= 300, pixels.shape
    assert pixels.std() > 0.05  # a figure with images or bars, not an empty canvas
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # many colours: heat maps or plotted data


def test_gallery_index_lists_every_example():
    on_disk = sorted(p.name for p in EXAMPLES.glob("plot_*.py"))
    assert on_disk == sorted(FIGURES)
    index = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for name in on_disk:
        assert f"python examples/{name}" in index, f"examples/README.md does not list {name}"


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_example_is_a_short_gallery_script(name):
    source = (EXAMPLES / name).read_text(encoding="utf-8")
    # sphinx-gallery layout: a module docstring opening with a title underlined by '='
    match = re.match(r'"""\n(.+)\n(=+)\n\n', source)
    assert match and len(match.group(2)) >= len(match.group(1)), f"{name} lacks a sphinx-gallery title"
    assert len(source.splitlines()) <= 85, f"{name} is too long for a gallery example"


@pytest.mark.parametrize("name", sorted(FIGURES))
@pytest.mark.slow
def test_example_runs_in_fast_mode(name, out_dir):
    proc = run_example(name, out_dir)
    check_figure(out_dir / FIGURES[name])
    assert str(out_dir / FIGURES[name]) in proc.stdout  # the example tells where to look


@pytest.mark.slow
def test_metrics_example_prints_reference_values(out_dir):
    """The hand-made maps have known scores, and apkit's AUC equals scikit-learn's."""
    proc = _RUNS.get("plot_metrics_own_maps.py") or run_example("plot_metrics_own_maps.py", out_dir)
    rows = {line[:14].strip(): [float(v) for v in line[14:].split()] for line in proc.stdout.splitlines()
            if line[:14].strip() in ("on the object", "beside it", "far away", "noise")}
    # columns: AUC, pointing, pointing@4px, cos to first, L2 to first
    assert rows["on the object"] == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert rows["beside it"][1:3] == [0.0, 1.0]  # the peak lies 3 px outside the disc
    assert rows["far away"][1:3] == [0.0, 0.0]
    ours, theirs = re.search(r"roc_auc of the noise map ([\d.]+) = scikit-learn's ([\d.]+)", proc.stdout).groups()
    assert ours == theirs
