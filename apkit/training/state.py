"""The resumable state of a training run: the best epoch so far, and the checkpoint written after every epoch.

A checkpoint holds the weights, the optimiser and schedule, every process's random states, the
history and the best weights, as tensors and plain data (it loads with ``weights_only=True``).
A run resumed from it ends with exactly the result of an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from apkit.core.distributed import all_gather_objects, world_info
from apkit.core.errors import CheckpointError
from apkit.models.checkpoint import atomic_save, safe_load
from apkit.training.recipes import Recipe

__all__ = ["CHECKPOINT_NAME", "TrainingState", "cpu_state_dict", "finished_epochs"]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "apkit-training-state"
#: How to start a run afresh, said in both worlds: an error reaches Python callers and the command line alike.
AFRESH = ("start afresh over it: resume=False in Python (overwrite=True for a finished run), --overwrite "
          "(instead of --resume) on the command line")
# Settings that must match for a checkpoint to be resumed (epochs may grow, except for cosine).
RESUME_KEYS = ("task", *(name for name in Recipe.field_names() if name != "epochs"), "seed", "world_size", "select")


def finished_epochs(path: Path) -> int:
    """The number of epochs the training checkpoint at ``path`` holds, read without loading its tensors.

    The file is memory-mapped, so only the small ``epoch`` entry is read from disk, however large
    the weights, optimiser and history it holds.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - damaged bytes surface as many exception types
        raise CheckpointError(f"the training checkpoint {str(path)!r} is corrupt ({type(exc).__name__}); use "
                              f"another folder, or {AFRESH}") from exc
    return int(payload.get("epoch", 0)) if isinstance(payload, dict) else 0


def _reason(exc: CheckpointError) -> str:
    """The middle of a checkpoint error (``corrupt or not a PyTorch file (EOFError)``), without its advice."""
    text = str(exc)
    return text.split(" is ", 1)[-1].split(";")[0] if " is " in text else text.split(";")[0]


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights and buffers on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # NumPy's key array is stored as a tensor: checkpoints hold tensors and plain data only.
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class TrainingState:
    """The best epoch so far and the checkpoint of one :func:`apkit.training.fit` run.

    Parameters
    ----------
    path : Path, optional
        The checkpoint file; ``None`` keeps the state in memory only.
    settings : dict
        The run's settings, stored in the checkpoint and compared when resuming.
    device : torch.device
        Where the run trains (for the CUDA random state).
    """

    def __init__(self, path: Path | None, settings: dict[str, Any], device: torch.device):
        self.path = path
        self.settings = settings
        self.device = device
        self.epoch = 0  # epochs finished
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.best_metrics: dict = {}
        self.best_value = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None

    def observe(self, model: nn.Module, epoch: int, metrics: dict, value: float) -> bool:
        """Record one validation result; keep the weights when they are the best so far."""
        improved = self.best_state is None or value > self.best_value  # NaN never beats a number
        if improved:
            self.best_value = -math.inf if math.isnan(value) else value
            self.best_state = cpu_state_dict(model)
            self.best_epoch, self.best_metrics = epoch, metrics
        return improved

    def save(self, model: nn.Module, optimizer, scheduler) -> None:
        """Write the checkpoint after an epoch (rank 0; every process contributes its random state)."""
        if self.path is None:
            return
        rng = all_gather_objects(_rng_state(self.device))  # every process resumes with its own random state
        if world_info()[0] != 0:
            return
        atomic_save({
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "epoch": self.history[-1]["epoch"],
            "settings": self.settings,
            "model": cpu_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng,
            "history": copy.deepcopy(self.history),
            "best": {"epoch": self.best_epoch, "metrics": dict(self.best_metrics), "value": self.best_value,
                     "state_dict": self.best_state},
        }, self.path)

    def restore(self, model: nn.Module, optimizer, scheduler) -> None:
        """Load the checkpoint into the model, optimiser, schedule, random states and this state."""
        try:
            payload = safe_load(self.path)
        except CheckpointError as exc:  # the user cannot re-create a run's checkpoint: say how to go on without it
            raise CheckpointError(f"the training checkpoint {str(self.path)!r} cannot be resumed ({_reason(exc)}); "
                                  f"use another folder, or {AFRESH}") from exc
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{str(self.path)!r} is not an apkit training checkpoint; use another folder, "
                                  f"or {AFRESH}")
        saved, settings = payload["settings"], self.settings
        keys = RESUME_KEYS + (("epochs",) if settings["schedule"] == "cosine" else ())
        changed = [f"{k} {saved.get(k)!r} -> {settings[k]!r}" for k in keys if saved.get(k) != settings[k]]
        if changed:
            raise CheckpointError(
                f"cannot resume {str(self.path)!r}: settings changed ({'; '.join(changed)}); "
                f"use the same settings, another folder, or {AFRESH}"
            )
        try:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            text = " ".join(str(exc).split())  # torch lists every key: keep the message one short line
            raise CheckpointError(f"the training checkpoint {str(self.path)!r} does not fit this model "
                                  f"({text[:240]}); use another folder, or {AFRESH}") from exc
        scheduler.load_state_dict(payload["scheduler"])
        _set_rng_state(payload["rng"][world_info()[0]], self.device)
        self.history = list(payload["history"])
        best = payload["best"]
        self.best_epoch, self.best_metrics = best["epoch"], dict(best["metrics"])
        self.best_value, self.best_state = float(best["value"]), best["state_dict"]
        self.epoch = int(payload["epoch"])
