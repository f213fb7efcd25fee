"""Efficiency on this machine, measured in the same run for every model: latency at batch 1,
throughput at batch N, memory, size, and what a million requests cost."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Efficiency:
    params: int
    disk_mb: float
    latency_ms_p50: float
    latency_ms_p95: float
    throughput_items_per_s: float
    batch: int
    rss_growth_mb: float  # resident memory the model and its inference added to this process

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def rss_mb() -> float:
    import psutil

    return float(psutil.Process(os.getpid()).memory_info().rss / 1e6)


def measure(
    run_batch: Callable[[Sequence[Any]], Any],
    items: Sequence[Any],
    *,
    batch: int,
    latency_items: int,
) -> tuple[float, float, float]:
    """(p50 ms, p95 ms) of one item at a time, and items/s in batches of `batch`."""
    run_batch(items[:1])  # warm-up: first-call allocations are not the steady state
    lat = []
    for item in items[:latency_items]:
        start = time.perf_counter()
        run_batch([item])
        lat.append((time.perf_counter() - start) * 1e3)
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        run_batch(items[i : i + batch])
    throughput = len(items) / (time.perf_counter() - start)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), throughput


def cost_per_million(items_per_s: float, cpu_hour_usd: float, cores: int) -> float:
    """Compute cost of 1M requests at the measured throughput, paying for every core."""
    return 1e6 / items_per_s / 3600 * cpu_hour_usd * cores
