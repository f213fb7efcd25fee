"""Timing several models in interleaved rounds, so a busy machine slows them alike.

Timing one model after another lets the machine's load decide their ratio: on a shared
machine a model timed while another job runs looks slow beside one timed a minute later in
quiet (an eval once put two copies of the same architecture 2.3x apart). Here each round
gives every model a short slice, one after another, the first model rotating from round to
round; a burst of load lands on a round, not on a model, and the spread over rounds shows
how steady the figures were. Each slice is whole passes over the same items, sorted by
length and cut into batches as a server's batcher would (padding a short item to a long
one's length is work no model needs); a fast model repeats its pass until the slice lasts
about `slice_s`. Batch-1 latency is timed in the same slices, a few items per round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stillroom.evaluate.efficiency import Efficiency
from stillroom.evaluate.workers import ModelSpec, workers

ROUNDS = 5
SLICE_S = 0.3


class Timer(Protocol):
    def call(self, command: str, *args: Any) -> Any: ...


@dataclass
class Timed:
    """One model's figures from the rounds: items/s and batch-1 ms, per round."""

    rates: list[float] = field(default_factory=list)
    latencies: list[list[float]] = field(default_factory=list)

    def efficiency(
        self, info: Mapping[str, Any], *, batch: int, items: int, peak_mb: float
    ) -> Efficiency:
        lat = [x for r in self.latencies for x in r] or [float("nan")]
        medians = [float(np.median(r)) for r in self.latencies if r] or [float("nan")]
        return Efficiency(
            params=int(info["params"]),
            disk_mb=float(info["disk_mb"]),
            latency_ms_p50=float(np.percentile(lat, 50)),
            latency_ms_p95=float(np.percentile(lat, 95)),
            throughput_items_per_s=float(np.median(self.rates)),
            batch=batch,
            items_timed=items,
            peak_rss_mb=peak_mb,
            dtype=str(info["dtype"]),
            throughput_min=min(self.rates),
            throughput_max=max(self.rates),
            latency_ms_p50_min=min(medians),
            latency_ms_p50_max=max(medians),
            rounds=len(self.rates),
            weights_mb=float(info["weights_mb"]),
        )


def time_in_rounds(
    timers: Mapping[str, Timer],
    items: Mapping[str, Sequence[Any]],
    *,
    batch: int,
    latency_items: int,
    length: Callable[[Any], int] = len,
    rounds: int = ROUNDS,
    slice_s: float = SLICE_S,
) -> dict[str, Timed]:
    """Every model's throughput on its `items` and batch-1 latency on the first
    `latency_items` of them, over `rounds` interleaved rounds. `items[role]` are the same
    test items for every model, each in its own form (a teacher's few-shot prompt, a
    student's bare text)."""
    by_length = {role: sorted(items[role], key=length) for role in timers}
    passes = {}
    for role, timer in timers.items():  # warm-up, and how many passes make a slice
        seconds = timer.call("calibrate", by_length[role], batch)
        passes[role] = max(1, math.ceil(slice_s / max(seconds, 1e-9)))
    n_single = min(latency_items, *(len(items[role]) for role in timers))
    per_round = math.ceil(n_single / rounds) if n_single else 0
    roles = list(timers)
    out = {role: Timed() for role in roles}
    for r in range(rounds):
        picks = [(r * per_round + k) % n_single for k in range(per_round)]
        first = r % len(roles)
        for role in roles[first:] + roles[:first]:
            latency = [items[role][i] for i in picks]
            rate, lat = timers[role].call("slice", by_length[role], batch, passes[role], latency)
            out[role].rates.append(rate)
            out[role].latencies.append(lat)
    return out


def serve_and_time(
    specs: Mapping[str, ModelSpec],
    items: Mapping[str, Sequence[Any]],
    *,
    batch: int,
    latency_items: int,
    length: Callable[[Any], int] = len,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Load every model in its own process, collect each one's predictions, time them all
    in interleaved rounds on `items`, and read each one's peak memory: (predictions,
    efficiency) by role."""
    with workers(dict(specs)) as running:
        predicted = {role: w.call("predict") for role, w in running.items()}
        timed = time_in_rounds(running, items, batch=batch, latency_items=latency_items,
                               length=length)  # fmt: skip
        memory = {role: float(w.call("memory")) for role, w in running.items()}
        info = {role: w.info for role, w in running.items()}
    efficiency = {
        role: timed[role]
        .efficiency(info[role], batch=batch, items=len(items[role]), peak_mb=memory[role])
        .as_dict()
        for role in running
    }
    return predicted, efficiency
