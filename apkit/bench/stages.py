"""The state of one benchmark run and its resumable stages.

A stage computes one result (a trained teacher, a compressed model, an evaluation, ROAR) and stores
it as ``stages/<key>.json`` under the run's folder; a stage whose file exists is read instead of
computed, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import captum
import sklearn
import torch
import torch_pruning
import torchvision
from tqdm.auto import tqdm

from apkit._io import atomic_write_json, read_json
from apkit._version import __version__
from apkit.distributed import barrier, is_main_process
from apkit.models import load_checkpoint

__all__ = ["TEACHER", "BenchRun", "platform_info", "stage_keys"]

TEACHER = "teacher"


@dataclass
class BenchRun:
    """State shared by the stages of one benchmark run."""

    settings: dict[str, Any]
    out: Path
    device: torch.device
    progress: bool
    datasets: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    _models: dict[str, torch.nn.Module] = field(default_factory=dict)

    def stage(self, key: str, compute: Callable[[], dict[str, Any]], summary: Callable[[dict], str]) -> dict:
        """Run ``compute`` once: its result is stored as ``stages/<key>.json`` and reused afterwards.

        Under ``torchrun`` every process computes (training and evaluation share the work) and
        rank 0 writes; the others wait for its files.
        """
        path = self.out / "stages" / f"{key}.json"
        if path.exists():
            result = read_json(path)
            self.log(f"[cached] {key}: {summary(result)}")
        else:
            started = time.perf_counter()
            result = compute()
            result["seconds"] = round(time.perf_counter() - started, 2)
            if is_main_process():
                atomic_write_json(path, result)
            barrier()
            result = read_json(path)  # a fresh and a resumed run see the same (JSON) values
            self.log(f"[done {result['seconds']:.0f}s] {key}: {summary(result)}")
        self.stages[key] = result
        return result

    def log(self, message: str) -> None:
        if self.progress and is_main_process():
            tqdm.write(message)

    def model_path(self, key: str) -> Path:
        return self.out / "models" / key / "model.pt"

    def load_model(self, key: str) -> torch.nn.Module:
        """A finished stage's model, loaded once per run."""
        if key not in self._models:
            self._models[key] = load_checkpoint(self.model_path(key), map_location=self.device)
        return self._models[key]

    def teacher_of(self, key: str) -> str:
        """The teacher stage a model is compared with."""
        if key in self.settings["teachers"]:
            return key
        compression = key.rpartition("-")[0]
        return self.settings["compressions"][compression].get("teacher", TEACHER)


def stage_keys(settings: dict[str, Any]) -> list[str]:
    """Names of the compressed models of a profile: ``<compression>-<regularizer>``."""
    return [f"{c}-{r}" for c in settings["compressions"] for r in settings["regularizers"]]


def platform_info() -> dict[str, Any]:
    """The versions of apkit, its dependencies and Python, and the machine it runs on."""
    return {
        "apkit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "captum": captum.__version__, "torch_pruning": torch_pruning.__version__, "scikit-learn": sklearn.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
