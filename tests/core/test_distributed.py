"""Compression fine-tuning and the audit under torch.distributed equal the same run in one process.

Two CPU processes (gloo, ``torch.multiprocessing``, a ``file://`` rendezvous) run a short
structured-pruning fine-tune with the SSWA regularizer and then audit the result; the same run in
this process is the reference.  What is provably equal, and so checked to float tolerance:

* the data: the distributed sampler splits each global batch of ``batch_size`` images between the
  ranks, and DDP averages the two half-batch gradients, which is the gradient of the whole batch;
* the SSWA channel draws: every rank draws the same channels as the single process, batch by batch;
* the metrics: evaluation and the audit add sums and counts over the ranks.

The model has no dropout (each rank draws its own masks) and no BatchNorm: a BatchNorm layer in
train mode normalises each rank's half-batch with its own statistics, which no single process
reproduces (``SyncBatchNorm``, which would share them, runs on GPUs only).  With BatchNorm, the
second test shows, the ranks still agree exactly with each other, draw the same channels, and their
audit is the single-process audit of their model.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import apkit
from apkit import models
from apkit.compression import compress
from apkit.core.distributed import is_main_process
from apkit.data import SyntheticShapes
from apkit.regularizers import AttributionMatchingLoss
from apkit.training import CHECKPOINT_NAME

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

WORLD = 2
IMAGE_SIZE = 32
NUM_TRAIN, NUM_VAL, NUM_SEG = 32, 16, 16
# A global batch of 8: 4 images per rank, 4 optimiser steps per epoch in both runs.
SETTINGS = {"epochs": 2, "lr": 0.005, "batch_size": 8, "pruning_ratio": 0.5}
TOLERANCE = 1e-5


def _teacher(batchnorm: bool = False) -> nn.Module:
    """A small VGG without dropout and, unless ``batchnorm``, without BatchNorm (see the module docstring)."""
    torch.manual_seed(0)
    net = models.create("vgg_small", num_classes=8, input_size=IMAGE_SIZE, width_divisor=4, dropout=0.0)
    if not batchnorm:
        for index, module in enumerate(net.features):
            if isinstance(module, nn.BatchNorm2d):
                net.features[index] = nn.Identity()  # keeps the layer indices, so the layer names hold
        del net.apkit_config  # no longer the registered architecture
    with torch.no_grad():
        net.classifier[-1].bias.fill_(1.0)  # predict most classes, so that the audit keeps most pairs
    return net


@contextlib.contextmanager
def _recorded_draws():
    """Record every SSWA channel draw of this process."""
    draws: list[list[int]] = []
    original = AttributionMatchingLoss.draw_dropped

    def draw_dropped(self, channels):
        dropped = original(self, channels)
        draws.append(dropped.tolist())
        return dropped

    AttributionMatchingLoss.draw_dropped = draw_dropped
    try:
        yield draws
    finally:
        AttributionMatchingLoss.draw_dropped = original


def _data() -> dict[str, SyntheticShapes]:
    return {split: SyntheticShapes(split, num_samples=n, image_size=IMAGE_SIZE)
            for split, n in (("train", NUM_TRAIN), ("val", NUM_VAL), ("seg", NUM_SEG))}


def _audit(teacher: nn.Module, model: nn.Module, seg) -> dict:
    report = apkit.audit(teacher, {"pruned": model}, seg, attribution_methods=["gradcam"], batch_size=3, device="cpu",
                         progress=False)
    return {"report": report, "predictive": report.predictive, "rows": report.rows,
            "pairs": {f"{m}/{k}": table.to_dict() for (m, k), table in report.pairs.items()}}


def _run(out_dir: Path, batchnorm: bool) -> tuple[dict, nn.Module]:
    """Fine-tune and audit; every rank returns what it computed (and the model)."""
    teacher, data = _teacher(batchnorm), _data()
    with _recorded_draws() as draws:
        model, record = compress(teacher, "structured", "sswa", train_set=data["train"], val_set=data["val"],
                                 out_dir=out_dir, device="cpu", seed=3, progress=False, **SETTINGS)
    audited = _audit(teacher, model, data["seg"])
    report = audited.pop("report")
    if is_main_process():
        report.save(out_dir / "audit")
    result = {"draws": draws, "state": model.state_dict(), "val": record.val,
              "val_after_pruning": record.val_after_pruning, "history": record.history}
    return {"fine_tune": result, "audit": audited}, model


def _worker(rank: int, world: int, folder: str, batchnorm: bool) -> None:
    torch.set_num_threads(1)
    folder = Path(folder)
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank, world_size=world)
    logs: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = logs.append
    logger = logging.getLogger("apkit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        # Each rank gets its own out_dir, so that a file written by rank 1 could not hide among rank 0's.
        result, _ = _run(folder / f"out-rank{rank}", batchnorm)
        torch.save({**result, "logs": [r.getMessage() for r in logs]}, folder / f"result{rank}.pt")
    finally:
        logger.removeHandler(handler)
        dist.destroy_process_group()


def _launch(folder: Path, batchnorm: bool) -> tuple[dict, list[dict], dict]:
    """The run in this process, in each of two ranks, and this process's audit of rank 0's model."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single, model = _run(folder / "single", batchnorm)
        # fork: the ranks start at once with this process's imports (spawning re-imports torch and apkit in
        # each rank, about 10 s on 2 cores); the ranks run one thread each, so no OpenMP pool crosses the fork.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        mp.start_processes(_worker, args=(WORLD, str(folder), batchnorm), nprocs=WORLD, join=True,
                           start_method=method)
        ranks = [torch.load(folder / f"result{r}.pt", weights_only=False) for r in range(WORLD)]
        # Only rank 0 logs: one line per epoch.
        logs = [rank.pop("logs") for rank in ranks]
        assert len(logs[0]) == SETTINGS["epochs"] and logs[0][0].startswith("epoch 1/") and logs[1] == []
        model.load_state_dict(ranks[0]["fine_tune"]["state"])
        same_model = _audit(_teacher(batchnorm), model, _data()["seg"])
        same_model.pop("report")
    finally:
        torch.set_num_threads(threads)
    return single, ranks, same_model


def _written(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _close(a, b, tolerance: float = TOLERANCE, path: str = "") -> None:
    """``a`` equals ``b``, recursively: floats to ``tolerance`` (NaN equals NaN), everything else exactly."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for key in a:
            if key != "seconds":  # wall time
                _close(a[key], b[key], tolerance, f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, tolerance, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance, equal_nan=True, msg=path)
        else:
            assert torch.equal(a, b), path
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=tolerance, abs=tolerance), path
    else:
        assert a == b, path


def test_two_processes_fine_tune_and_audit_like_one(tmp_path):
    single, ranks, same_model = _launch(tmp_path, batchnorm=False)

    # Every rank ends with the same model and the same metrics, exactly.
    _close(ranks[0], ranks[1], 0.0)

    # Every rank drew the single process's SSWA channels: one draw per global batch, 4 steps x 2 epochs.
    draws = single["fine_tune"]["draws"]
    assert len(draws) == SETTINGS["epochs"] * NUM_TRAIN // SETTINGS["batch_size"]
    assert all(len(d) == math.floor(32 * 0.3) for d in draws)  # 32 teacher channels, drop 0.3
    assert len({tuple(d) for d in draws}) > 1
    assert ranks[0]["fine_tune"]["draws"] == draws

    # The distributed fine-tune gives the single process's weights, losses and validation metrics.
    _close(ranks[0]["fine_tune"], single["fine_tune"])
    assert single["fine_tune"]["val"]["num_images"] == NUM_VAL

    # The distributed audit gives the single-process audit of the same model, pair by pair.
    _close(ranks[0]["audit"], same_model)
    row = same_model["rows"][1]
    assert row["model"] == "pruned" and row["kept"] > 0 and not math.isnan(row["auc"]) and not math.isnan(row["cos"])
    # ... and, averaged over pairs, the audit of the model fine-tuned in one process.  Not pair by pair: a
    # pair's AUC ranks its pixels, and weights that differ by float rounding may swap two nearly tied
    # pixels, which moves that AUC by 1 / (positives x negatives), about 1e-5 at 32x32.
    _close(ranks[0]["audit"]["predictive"], single["audit"]["predictive"])
    _close(ranks[0]["audit"]["rows"], single["audit"]["rows"], 1e-4)

    # Only rank 0 wrote files (and logged, see _launch), the same ones as the single process, and no
    # temporary file.
    assert not (tmp_path / "out-rank1").exists()
    written = _written(tmp_path / "out-rank0")
    assert written == _written(tmp_path / "single")
    assert {f"train/{CHECKPOINT_NAME}", "model_state.pt", "record.json", "audit/report.json"} <= set(written)
    assert not [p for p in written if p.endswith(".tmp")]


def test_with_batchnorm_the_ranks_agree_and_the_audit_is_the_single_process_one(tmp_path):
    # Each rank normalises its half-batch with its own BatchNorm statistics, so the fine-tune is not the
    # single process's; DDP still keeps the ranks' weights equal, and rank 0's statistics are broadcast.
    single, ranks, same_model = _launch(tmp_path, batchnorm=True)
    _close(ranks[0], ranks[1], 0.0)
    assert any(k.endswith("running_mean") for k in ranks[0]["fine_tune"]["state"])
    assert ranks[0]["fine_tune"]["draws"] == single["fine_tune"]["draws"]
    _close(ranks[0]["audit"], same_model)
    assert not (tmp_path / "out-rank1").exists()
    assert _written(tmp_path / "out-rank0") == _written(tmp_path / "single")
    assert "model.pt" in _written(tmp_path / "out-rank0")  # a registered architecture: a full checkpoint
