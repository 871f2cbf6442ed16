"""A full disk is one apkit error, on a real small disk: ``apkit train``, ``audit`` and ``bench`` write into a
tmpfs of a few kilobytes, mounted in a private mount namespace (``unshare -rm``), and must end with exit
status 1, one ``apkit: error:`` line naming the file and the free space, no traceback, no temporary file
and no half report set.  Skipped, with the reason, where such a mount is not allowed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apkit import models

TINY = dict(num_classes=8, input_size=32, width_divisor=8)

# Runs `apkit ARGV` in the namespace, then lists what is left on the small disk, as one JSON line.
DRIVER = """
import contextlib, io, json, os, sys
from apkit.cli import main
disk, argv = sys.argv[1], sys.argv[2:]
err, code = io.StringIO(), 0
with contextlib.redirect_stderr(err):
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    except BaseException as exc:
        import traceback
        traceback.print_exc()
        code = f"raised {type(exc).__name__}"
left = sorted(os.path.relpath(os.path.join(d, n), disk) for d, dirs, names in os.walk(disk) for n in names + dirs)
print(json.dumps({"code": code, "stderr": err.getvalue(), "left": left}))
"""


def _mount_allowed(folder: Path) -> str | None:
    """None when a tmpfs can be mounted in a private namespace here, else the reason it cannot."""
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux) to mount a private tmpfs"
    folder.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{folder}'"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"mounting a tmpfs is not allowed here ({probe.stderr.strip() or probe.returncode})"
    return None


def _on_small_disk(disk: Path, size: str, argv: list[str]) -> dict:
    reason = _mount_allowed(disk)
    if reason:
        pytest.skip(reason)
    script = f"mount -t tmpfs -o size={size} tmpfs \"$1\" && exec \"$0\" -c \"$2\" \"$1\" \"${{@:3}}\""
    command = ["unshare", "-rm", "bash", "-c", script, sys.executable, str(disk), DRIVER, *map(str, argv)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_full_disk(result: dict, disk: Path) -> str:
    err = result["stderr"]
    assert "Traceback" not in err, err
    assert result["code"] == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("apkit: error: cannot write"), err
    assert str(disk) in lines[0] and "free on its disk" in lines[0] and "free some disk space" in lines[0], err
    stray = [name for name in result["left"] if name.endswith(".tmp") or ".apkit-set-" in name]
    assert stray == [], stray
    return lines[0]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return models.save_checkpoint(models.create("vgg_small", **TINY), tmp_path_factory.mktemp("disk") / "teacher.pt")


def test_train_on_a_full_disk(tmp_path):
    disk = tmp_path / "disk"
    result = _on_small_disk(disk, "64k", [
        "train", "--image-size", "32", "--width-divisor", "8", "--train-samples", "32", "--val-samples", "16",
        "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--quiet", "--out", disk])
    _check_full_disk(result, disk)
    assert "model.pt" not in result["left"]


def test_audit_on_a_full_disk_leaves_no_half_report(tmp_path, teacher):
    disk = tmp_path / "disk"
    result = _on_small_disk(disk, "24k", [
        "audit", "--teacher", teacher, "--student", teacher, "--samples", "8", "--batch-size", "8",
        "--resamples", "20", "--device", "cpu", "--quiet", "--out", disk])
    _check_full_disk(result, disk)
    assert not [name for name in result["left"] if name.startswith(("report", "figures"))], result["left"]


@pytest.mark.slow
def test_bench_on_a_full_disk(tmp_path):
    disk = tmp_path / "disk"
    result = _on_small_disk(disk, "256k", ["bench", "--profile", "smoke", "--device", "cpu", "--quiet", "--out", disk])
    _check_full_disk(result, disk)
