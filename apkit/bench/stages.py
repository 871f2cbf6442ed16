"""The state of one benchmark run and its resumable stages.

A stage computes one result (a trained teacher, a compressed model, an evaluation, ROAR) and stores
it as ``stages/<key>.json`` under the run's folder; a stage whose file exists is read instead of
computed, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import os
import platform
import re
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

from apkit.core.distributed import barrier, is_main_process
from apkit.core.io import atomic_write_json, read_json
from apkit.core.version import __version__
from apkit.evaluation.maps import MapCache
from apkit.models import load_checkpoint

__all__ = ["TEACHER", "BenchRun", "cell_keys", "model_key", "parse_key", "platform_info", "regularizers_of",
           "stage_keys", "first_seed_or_teacher", "training_seeds"]

TEACHER = "teacher"


def model_key(compression: str, regularizer: str, seed: int) -> str:
    """The name of one compressed model of the grid: ``<compression>-<regularizer>-s<seed>``."""
    return f"{compression}-{regularizer}-s{seed}"


def parse_key(key: str) -> tuple[str, str, int]:
    """``(compression, regularizer, seed)`` of a model key (compression names may hold dashes)."""
    rest, _, seed = key.rpartition("-")
    compression, _, regularizer = rest.rpartition("-")
    return compression, regularizer, int(seed[1:])


def training_seeds(settings: dict[str, Any], compression: str) -> list[int]:
    """The training seeds of one compression: its own ``seeds`` entry, else the profile's ``seeds``.

    Examples
    --------
    >>> settings = {"seeds": [0, 1, 2], "compressions": {"kd": {}, "structured": {"seeds": [0, 1, 2, 3, 4]}}}
    >>> training_seeds(settings, "kd"), training_seeds(settings, "structured")
    ([0, 1, 2], [0, 1, 2, 3, 4])
    """
    return list(settings["compressions"][compression].get("seeds", settings["seeds"]))


def regularizers_of(settings: dict[str, Any], compression: str) -> list[str]:
    """The regularizers one compression is trained with: its own ``regularizers`` entry, else the profile's.

    Examples
    --------
    >>> compressions = {"kd": {}, "qat-2bit": {"regularizers": ["none", "swa"]}}
    >>> settings = {"regularizers": ["none", "swa", "ewa"], "compressions": compressions}
    >>> regularizers_of(settings, "kd"), regularizers_of(settings, "qat-2bit")
    (['none', 'swa', 'ewa'], ['none', 'swa'])
    """
    return list(settings["compressions"][compression].get("regularizers", settings["regularizers"]))


def first_seed_or_teacher(settings: dict[str, Any], key: str) -> bool:
    """Whether ``key`` is a teacher or a compressed model of its compression's first training seed."""
    if key in settings["teachers"]:
        return True
    compression, _, seed = parse_key(key)
    return seed == training_seeds(settings, compression)[0]


def stage_keys(settings: dict[str, Any]) -> list[str]:
    """Names of the compressed models of a profile: every compression x regularizer x training seed."""
    return [model_key(c, r, s) for c, r in cell_keys(settings) for s in training_seeds(settings, c)]


def cell_keys(settings: dict[str, Any]) -> list[tuple[str, str]]:
    """The cells of the grid, ``(compression, regularizer)``: each holds one model per training seed."""
    return [(c, r) for c in settings["compressions"] for r in regularizers_of(settings, c)]


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
    _caches: dict[str, MapCache] = field(default_factory=dict)

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

    def map_cache(self, key: str) -> MapCache:
        """The logits and maps of a teacher on the evaluation set, kept for the whole run: every
        student's comparison reads the teacher's maps computed for the ones before it."""
        if key not in self._caches:
            self._caches[key] = MapCache(self.load_model(key))
        return self._caches[key]

    def teacher_of(self, key: str) -> str:
        """The teacher stage a model is compared with."""
        if key in self.settings["teachers"]:
            return key
        return self.settings["compressions"][parse_key(key)[0]].get("teacher", TEACHER)

    def source_key(self, name: str) -> str:
        """A model named in the settings: a teacher, ``<compression>-<regularizer>`` (the first seed's
        model of that cell), or a full model key."""
        if name in self.settings["teachers"] or re.fullmatch(r"s\d+", name.rpartition("-")[2]):
            return name
        compression, _, regularizer = name.rpartition("-")
        return model_key(compression, regularizer, training_seeds(self.settings, compression)[0])


def platform_info() -> dict[str, Any]:
    """The versions of apkit, its dependencies and Python, and the machine it runs on."""
    return {
        "apkit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "captum": captum.__version__, "torch_pruning": torch_pruning.__version__, "scikit-learn": sklearn.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
