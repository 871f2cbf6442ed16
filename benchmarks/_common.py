"""What every benchmark shares: the result record, timing, peak memory and the machine description.

Each ``bench_*.py`` script measures with functions that return :class:`Measurement` records;
``run.py`` gathers them into one table.  The scripts are run as files (``python benchmarks/...``),
so this module is imported by its plain name; importing it also puts the checkout's ``apkit`` first
on the path, so a fresh clone measures its own code.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))  # after the script's own folder, before site-packages

import torch  # noqa: E402

from apkit.core.errors import ValidationError  # noqa: E402

__all__ = ["Measurement", "PeakMemory", "describe_machine", "format_bytes", "machine_info", "print_measurements",
           "resolve_device", "synchronize", "timed"]


@dataclass
class Measurement:
    """One row of the benchmark table: an apkit operation and its baseline, on the same inputs.

    Attributes
    ----------
    name : str
        Short identifier of the row (e.g. ``"gradcam"``).
    operation : str
        What is computed, with its sizes.
    apkit, baseline : str
        How apkit computes it, and the reference it is compared with (empty: no baseline).
    apkit_s, baseline_s : float or None
        Wall time in seconds (the best of ``repeats`` runs).
    equal : bool or None
        Whether both gave the same values (``check`` says what was compared); None: nothing to compare.
    check : str
        What the value check compared and found, or why the row was skipped.
    apkit_peak, baseline_peak : int or None
        Peak memory of one run in bytes (see :class:`PeakMemory`); None where it could not be measured.
    device : str
        Where apkit ran.
    repeats : int
        Timed runs of each side.
    skipped : bool
        The row could not be measured here (``check`` says why).
    extra : dict
        Further figures of the row (e.g. per-map times).
    """

    name: str
    operation: str
    apkit: str
    baseline: str
    apkit_s: float | None = None
    baseline_s: float | None = None
    equal: bool | None = None
    check: str = ""
    apkit_peak: int | None = None
    baseline_peak: int | None = None
    device: str = "cpu"
    repeats: int = 1
    skipped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Baseline time over apkit time (above 1: apkit is faster)."""
        if self.apkit_s is None or self.baseline_s is None or self.apkit_s <= 0:
            return None
        return self.baseline_s / self.apkit_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; otherwise ``name`` itself (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = torch.device("meta")  # refused just below
    if device.type not in ("cpu", "cuda"):
        raise ValidationError(f"device {name!r} is not supported here; use cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValidationError(f"device {name!r}: CUDA is not available on this machine; use cpu or auto")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device, so that a wall-clock time covers the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------- memory

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    # Linux >= 4.0: writing 5 to clear_refs resets the kernel's peak-RSS mark (VmHWM) to the current RSS.
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; absent from other C libraries
    except (OSError, AttributeError):
        return None


def _release_free_heap() -> None:
    # glibc keeps freed memory mapped; handing it back first makes the starting RSS the live memory,
    # so that an operation reusing freed pages is not counted as needing no memory.
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class PeakMemory:
    """Peak memory that one block of code adds, on the CPU or a CUDA device.

    CUDA: ``torch.cuda.max_memory_allocated`` during the block minus what was allocated when it
    began (the caching allocator's reserved memory is not counted).  CPU (Linux): the kernel's
    peak resident set size (``VmHWM``), reset when the block begins through ``/proc/self/clear_refs``,
    minus the resident size then; freed heap memory is handed back to the system first.  This is
    exact (the kernel tracks the peak, nothing is sampled) and per block, but it counts everything
    the process touches meanwhile, including memory the allocators keep.  Elsewhere ``peak`` is None.

    Examples
    --------
    >>> with PeakMemory(torch.device("cpu")) as memory:
    ...     x = torch.ones(4_000_000)
    >>> memory.peak is None or memory.peak >= 8_000_000
    True
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak: int | None = None
        self._start: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            _release_free_heap()
            self._start = _status_kb("VmRSS") if _reset_peak_rss() else None
        return self

    def __exit__(self, *exc) -> None:
        if self._start is None:
            return
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak = max(torch.cuda.max_memory_allocated(self.device) - self._start, 0)
        else:
            high = _status_kb("VmHWM")
            self.peak = None if high is None else max(high - self._start, 0)


def timed(function: Callable[[], Any], *, repeats: int, device: torch.device) -> tuple[float, int | None, Any]:
    """Run ``function`` ``repeats`` times: ``(best wall time, largest peak memory, last result)``.

    The best time is reported because a shared machine only ever makes a run slower.
    """
    best, peak, result = float("inf"), None, None
    for _ in range(max(1, repeats)):
        result = None  # the previous result would count in this run's memory
        with PeakMemory(device) as memory:
            synchronize(device)
            began = time.perf_counter()
            result = function()
            synchronize(device)
            best = min(best, time.perf_counter() - began)
        if memory.peak is not None:
            peak = memory.peak if peak is None else max(peak, memory.peak)
    return best, peak, result


def format_bytes(count: int | None) -> str:
    """``1.2 GB``-style text; ``–`` for an unknown amount."""
    if count is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


# ------------------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info(device: torch.device) -> dict[str, Any]:
    """The machine the figures come from: CPU model and cores, GPU, library versions."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        info["cuda"] = torch.version.cuda
    import apkit

    info["apkit"] = apkit.__version__
    info["apkit_source"] = str(Path(apkit.__file__).resolve().parent)  # which checkout was measured
    return info


def describe_machine(info: dict[str, Any]) -> str:
    gpu = info["gpu"] or "none"
    return (f"{info['cpu']}, {info['cpu_cores']} cores ({info['torch_threads']} torch threads); GPU: {gpu}; "
            f"device {info['device']}; torch {info['torch']}, Python {info['python']}, apkit {info['apkit']}")


def print_measurements(measurements: list[Measurement]) -> None:
    """A plain-text table of ``measurements`` for a single script's output."""
    for m in measurements:
        print(f"\n{m.operation}  [{m.device}]")
        if m.skipped:
            print(f"  skipped: {m.check}")
            continue
        print(f"  apkit    {m.apkit:58s} {m.apkit_s:9.3f} s   peak {format_bytes(m.apkit_peak)}")
        if m.baseline_s is not None:
            print(f"  baseline {m.baseline:58s} {m.baseline_s:9.3f} s   peak {format_bytes(m.baseline_peak)}")
            print(f"  speed-up (baseline / apkit): {m.ratio:.2f}x")
        if m.check:
            print(f"  check: {'passed' if m.equal else 'FAILED' if m.equal is False else 'n/a'} - {m.check}")
