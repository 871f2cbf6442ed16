"""Small helpers over ``torch.distributed`` so that the same code runs in one process or under ``torchrun``.

The ``apkit`` commands join the process group that ``torchrun --nproc-per-node N ...`` describes
(:func:`init_from_environment`); from Python, call it, or ``torch.distributed.init_process_group``
(backend ``"nccl"`` on GPUs, ``"gloo"`` on CPUs), before using apkit.  Without a process group every
helper is a cheap no-op for a single process.

Examples
--------
>>> import torch
>>> world_info()
(0, 1)
>>> is_main_process()
True
>>> all_reduce_sum(torch.tensor([1.0, 2.0]))
tensor([1., 2.])
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "all_gather_objects",
    "all_gather_rows",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "init_from_environment",
    "is_distributed",
    "is_main_process",
    "local_device",
    "world_info",
]


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (the process that writes files and logs) and in a single process."""
    return world_info()[0] == 0


def init_from_environment(device: str | torch.device | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment, if any and not yet joined.

    ``WORLD_SIZE`` above 1 (set by ``torchrun``) starts a group with the ``"nccl"`` backend when the
    run uses CUDA (``device`` ``"cuda"``, ``"cuda:N"``, or ``None``/``"auto"`` with a GPU present),
    each process on its ``LOCAL_RANK``'s GPU, and ``"gloo"`` otherwise.  The group is left at exit.
    Returns :func:`is_distributed`.
    """
    import atexit

    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_distributed()
    name = "auto" if device is None else str(device)
    use_cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return is_distributed()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def local_device(device: torch.device) -> torch.device:
    """Give each process its own GPU: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes (returns a new tensor; the input is not changed)."""
    if not is_distributed():
        return tensor.clone()
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate the rows (dim 0) of ``tensor`` from every process, in rank order.

    Processes may hold different numbers of rows: each pads to the longest, then the padding
    is cut off, so no row is duplicated or lost.
    """
    if not is_distributed():
        return tensor
    world = dist.get_world_size()
    count = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(int(c) for c in counts))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    pieces = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[: int(c)] for piece, c in zip(pieces, counts)])


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running statistics) to every process.

    DistributedDataParallel keeps parameters identical, but each process updates its own
    BatchNorm statistics on its own batches; evaluating or saving after this makes every
    process hold the same model.
    """
    if not is_distributed():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src)
