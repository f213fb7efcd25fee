"""Efficiency on this machine, measured in the same run for every model: latency at batch 1,
throughput at batch N, memory, size, and what a million requests cost.

`stillroom eval` times its models in interleaved rounds (evaluate/rounds.py), each in a
process of its own (evaluate/workers.py); `measure` times one model alone, the way eval did
before, and stays for comparisons (benchmarks/eval_efficiency.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_TIMED_S = 2.0  # repeat fast models' throughput passes until this much time is measured
MIN_ROUNDS = 12  # timing rounds at least: paired turns for the speed ratio's interval


@dataclass
class Efficiency:
    params: int
    disk_mb: float
    latency_ms_p50: float  # over every batch-1 call
    latency_ms_p95: float
    throughput_items_per_s: float  # over every whole pass timed
    batch: int
    items_timed: int
    peak_rss_mb: float  # peak resident memory of the model's process while serving, above
    # its level with torch imported and no model loaded (see workers.py)
    dtype: str = "float32"  # the precision the model was timed in
    throughput_min: float | None = None  # the slowest and fastest whole pass's rate
    throughput_max: float | None = None
    latency_ms_min: float | None = None  # the fastest and slowest batch-1 call
    latency_ms_max: float | None = None
    rounds: int = 1  # turns taken, interleaved with the other models' (evaluate/rounds.py)
    passes: int = 1  # whole passes over the timed items
    weights_mb: float | None = None  # parameters and buffers as held in memory
    held_rss_mb: float | None = None  # resident after serving, above the same level as peak
    # items/s of each round's turn, in round order: turn i of every model was taken in the
    # same round, one right after another, so their ratio is paired (verdict.speedup)
    turn_rates: list[float] | None = None

    def as_dict(self) -> dict[str, Any]:
        def rounded(v: Any) -> Any:
            if isinstance(v, list):
                return [rounded(x) for x in v]
            return round(v, 3) if isinstance(v, float) else v

        return {k: rounded(v) for k, v in asdict(self).items()}


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def rss_mb() -> float:
    import psutil

    return float(psutil.Process(os.getpid()).memory_info().rss / 1e6)


def reset_peak_rss() -> bool:
    """Set this process's peak resident size (VmHWM) to its current size; False where the
    kernel does not offer it (Linux before 4.0, other systems)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float | None:
    """This process's peak resident size (VmHWM) since start or the last reset; None where
    /proc does not give it."""
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024 / 1e6


def release_freed_memory() -> None:
    """Hand freed heap back to the OS (glibc's malloc_trim), so what a model's load freed
    again does not stay counted as resident."""
    # Not glibc: freed memory goes back on the allocator's own terms.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every few milliseconds.

    Sampling from a thread instead of reading the process's lifetime peak (ru_maxrss) lets
    several models be measured one after another in one process, each on its own.
    """

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.base = self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.base = self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def added_mb(self) -> float:
        return self.peak - self.base

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, rss_mb())


def measure(
    run_batch: Callable[[Sequence[Any]], Any],
    items: Sequence[Any],
    *,
    batch: int,
    latency_items: int,
    min_timed_s: float = MIN_TIMED_S,
) -> tuple[float, float, float]:
    """(p50 ms, p95 ms) of one item at a time, and items/s in batches of `batch`, for one
    model alone in this process: how eval timed its models, one after another, before
    rounds (kept to compare the two in benchmarks/eval_efficiency.py).

    Batches are cut from the items sorted by length, as a server's batcher would: padding a
    short item to a long one's length is work no model needs to do. Every model is measured
    the same way, on the same items; fast ones repeat the pass until `min_timed_s` is timed.
    """
    # Warm-up with a whole batch: first-call allocations are not the steady state, and a
    # running server already holds what earlier traffic cached (the teacher's KV cache of a
    # few-shot header shared by its prompts), so batch-1 latency is measured with it warm.
    run_batch(items[:batch])
    lat = []
    for item in items[:latency_items]:
        start = time.perf_counter()
        run_batch([item])
        lat.append((time.perf_counter() - start) * 1e3)
    by_length = sorted(items, key=_length)
    # Whole passes over the items until `min_timed_s` is spent; the median pass's rate is
    # reported, so one pass disturbed by the OS does not decide a fast model's figure.
    rates: list[float] = []
    spent = 0.0
    while spent < min_timed_s:
        start = time.perf_counter()
        for i in range(0, len(by_length), batch):
            run_batch(by_length[i : i + batch])
        elapsed = time.perf_counter() - start
        rates.append(len(by_length) / elapsed)
        spent += elapsed
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), float(np.median(rates))


def _length(item: Any) -> int:
    return len(item) if isinstance(item, str | list | tuple) else 0


def cost_per_million(items_per_s: float, cpu_hour_usd: float, cores: int) -> float:
    """Compute cost of 1M requests at the measured throughput, paying for every core."""
    return 1e6 / items_per_s / 3600 * cpu_hour_usd * cores


def price_models(models: dict[str, Any], cpu_hour_usd: float) -> int:
    """Add each model's cost per 1M requests at its median throughput; the cores paid for."""
    cores = os.cpu_count() or 1
    for entry in models.values():
        tput = entry["efficiency"]["throughput_items_per_s"]
        entry["cost_per_1m_requests_usd"] = round(cost_per_million(tput, cpu_hour_usd, cores), 4)
    return cores
