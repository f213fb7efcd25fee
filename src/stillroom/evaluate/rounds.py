"""Timing several models in interleaved rounds, so a busy machine slows them alike.

Timing one model after another lets the machine's load decide their ratio: on a shared
machine a model timed while another job runs looks slow beside one timed a minute later in
quiet (an eval once put two copies of the same architecture 2.3x apart). Here the models
take turns: each round gives every model one turn of batches lasting about as long as the
slowest model's batch (at least `slice_s`), the first model rotating from round to round,
so a burst of load that lasts longer than a round lands on all of them; turn i of each model
ran right after the others', so their rates' ratio is a paired sample of the speed ratio
(verdict.speedup); a warm-up pass comes first and sets the turns' length. Batches are
cut from the items sorted by length, as a server's batcher would (padding a short item to
a long one's length is work no model needs), and each model works through them in order,
wrapping around; a whole pass's rate is one sample of its throughput. Rounds go on until
every model has made `min_passes` passes and been timed `min_timed_s`, and `min_rounds`
rounds are done; the rate over all whole passes is reported (every turn counts, so a burst
of load weighs by how long it lasted), with the slowest and fastest pass beside it. With
many batches, a turn's rate also depends on which batches it ran (they differ in length):
noise in the paired ratio, which the interval includes. Each round also times one item alone
(batch 1) per model, until `latency_items` have been.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stillroom.evaluate.efficiency import MIN_ROUNDS, MIN_TIMED_S, Efficiency
from stillroom.evaluate.workers import ModelSpec, workers

SLICE_S = 0.1
MIN_PASSES = 5
TIMING_NOTE = (
    "Every model is loaded in a process of its own and timed in interleaved rounds: each "
    "round gives each model a short turn of batches, so a busy machine slows them alike. "
    "Throughput is over every whole pass of the timed items. Turns last as long for every "
    "model, so the headline's speed ratio pairs them round by round; it quotes the low end "
    "of the ratio's 95% interval over the rounds. Peak memory is the most "
    "the model's process held while serving (weights, activations, tokenizer, runtime "
    "buffers) above its level with torch and the model's code imported and no model loaded."
)


class Timer(Protocol):
    def call(self, command: str, *args: Any) -> Any: ...


@dataclass
class Timed:
    """One model's progress through the rounds: its batches' sizes, where it is, and the
    rates of its whole passes and its batch-1 latencies so far."""

    sizes: list[int]
    position: int = 0  # batches run so far
    pass_items: int = 0
    pass_s: float = 0.0
    timed_s: float = 0.0
    rounds: int = 0
    passes: list[float] = field(default_factory=list)  # items/s of each whole pass
    passes_items: int = 0  # items and seconds of the whole passes together
    passes_s: float = 0.0
    latencies: list[float] = field(default_factory=list)  # ms
    turns: list[float] = field(default_factory=list)  # items/s of each round's turn

    def record(self, spent: list[float], latency_ms: float) -> None:
        turn_items = 0
        for seconds in spent:
            size = self.sizes[self.position % len(self.sizes)]
            turn_items += size
            self.pass_items += size
            self.pass_s += seconds
            self.timed_s += seconds
            self.position += 1
            if self.position % len(self.sizes) == 0:
                self.passes.append(self.pass_items / self.pass_s)
                self.passes_items += self.pass_items
                self.passes_s += self.pass_s
                self.pass_items, self.pass_s = 0, 0.0
        if sum(spent) > 0:
            self.turns.append(turn_items / sum(spent))
        if not math.isnan(latency_ms):
            self.latencies.append(latency_ms)
        self.rounds += 1

    def done(self, min_passes: int, min_timed_s: float, singles: int) -> bool:
        enough = len(self.passes) >= min_passes and self.timed_s >= min_timed_s
        return enough and len(self.latencies) >= singles

    def efficiency(
        self, info: Mapping[str, Any], *, batch: int, items: int, memory_mb: tuple[float, float]
    ) -> Efficiency:
        lat = self.latencies or [float("nan")]
        return Efficiency(
            params=int(info["params"]),
            disk_mb=float(info["disk_mb"]),
            latency_ms_p50=float(np.percentile(lat, 50)),
            latency_ms_p95=float(np.percentile(lat, 95)),
            throughput_items_per_s=self.passes_items / self.passes_s,
            batch=batch,
            items_timed=items,
            peak_rss_mb=memory_mb[0],
            held_rss_mb=memory_mb[1],
            dtype=str(info["dtype"]),
            throughput_min=min(self.passes),
            throughput_max=max(self.passes),
            latency_ms_min=min(lat),
            latency_ms_max=max(lat),
            rounds=self.rounds,
            passes=len(self.passes),
            turn_rates=list(self.turns),
            weights_mb=float(info["weights_mb"]),
        )


def time_in_rounds(
    timers: Mapping[str, Timer],
    items: Mapping[str, Sequence[Any]],
    *,
    batch: int,
    latency_items: int,
    length: Callable[[Any], int] = len,
    slice_s: float = SLICE_S,
    min_passes: int = MIN_PASSES,
    min_timed_s: float = MIN_TIMED_S,
    min_rounds: int = MIN_ROUNDS,
) -> dict[str, Timed]:
    """Every model's throughput on its `items` and batch-1 latency on the first
    `latency_items` of them, in interleaved rounds. `items[role]` are the same test items
    for every model, each in its own form (a teacher's few-shot prompt, a student's text)."""
    singles = min(latency_items, *(len(items[role]) for role in timers))
    state = {}
    turn_s = slice_s
    for role, timer in timers.items():  # the batches each model works through; a warm-up
        ordered = sorted(items[role], key=length)
        batches = [ordered[i : i + batch] for i in range(0, len(ordered), batch)]
        warm = timer.call("calibrate", batches, list(items[role][:singles]))
        turn_s = max(turn_s, float(np.median(warm)))  # every turn as long as the slowest's
        state[role] = Timed([len(b) for b in batches])
    roles = list(timers)
    r = 0
    while r < min_rounds or not all(
        t.done(min_passes, min_timed_s, singles) for t in state.values()
    ):
        first = r % len(roles)
        for role in roles[first:] + roles[:first]:
            t = state[role]
            single = len(t.latencies) if len(t.latencies) < singles else None
            t.record(*timers[role].call("slice", t.position, turn_s, single))
        r += 1
    return state


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
        memory = {role: w.call("memory") for role, w in running.items()}
        info = {role: w.info for role, w in running.items()}
    efficiency = {
        role: timed[role]
        .efficiency(info[role], batch=batch, items=len(items[role]), memory_mb=memory[role])
        .as_dict()
        for role in running
    }
    return predicted, efficiency
